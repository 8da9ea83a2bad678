"""ckpt_path is checked before anything starts: missing, not a checkpoint, truncated,
or another model's (the first mismatching tensor and both shapes are named)."""

import pytest
import torch
from hydra.utils import instantiate

from scaletrain.checkpoint.contents import checkpoint_problems, resume_length_problems
from tests.helpers import compose_train


def mlp(hidden: int):
    return instantiate(compose_train(f"model.net.hidden_dims=[{hidden}]").model)


def save_checkpoint(path, model):
    torch.save({"state_dict": model.state_dict(), "epoch": 1}, path)
    return path


def test_a_checkpoint_of_this_model_passes(tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", mlp(64))
    assert checkpoint_problems(str(path), mlp(64)) == []


def test_missing_checkpoint(tmp_path):
    (problem,) = checkpoint_problems(str(tmp_path / "gone.ckpt"), mlp(64))
    assert problem.startswith(f"ckpt_path={tmp_path}/gone.ckpt: no such file or directory")


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", mlp(64))
    path.write_bytes(path.read_bytes()[:-200])
    (problem,) = checkpoint_problems(str(path), mlp(64))
    assert problem == f"ckpt_path={path}: not a checkpoint file (truncated or corrupt?)"


def test_a_file_that_is_no_checkpoint(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    (problem,) = checkpoint_problems(str(path), mlp(64))
    assert "not a checkpoint file" in problem


def test_another_models_checkpoint_names_the_tensor_and_both_shapes(tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", mlp(32))
    (problem,) = checkpoint_problems(str(path), mlp(64))
    assert problem == (
        f"ckpt_path={path}: belongs to another model: net.blocks.0.0.weight is [32, 64] there, "
        "[64, 64] in this model"
    )


@pytest.mark.slow  # the command line itself
def test_cli_refuses_a_corrupt_checkpoint_in_one_line_before_training(train_cli, tmp_path):
    path = save_checkpoint(tmp_path / "a.ckpt", mlp(64))
    path.write_bytes(path.read_bytes()[:100])
    run = train_cli(f"ckpt_path={path}", "strategy=ddp", "trainer.devices=2")
    assert run.returncode == 2
    assert "Traceback" not in run.output and "Initializing distributed" not in run.output
    assert f"error: ckpt_path={path}: not a checkpoint file (truncated or corrupt?)" in run.output


@pytest.mark.parametrize(
    ("max_epochs", "refused"), [(4, True), (5, False), (9, False), (-1, False)]
)
def test_a_resume_whose_max_epochs_ends_before_the_checkpoints_epoch_is_one_line(
    tmp_path, max_epochs, refused
):
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "epoch": 5, "global_step": 50}, path)
    problems = resume_length_problems(str(path), max_epochs)
    assert problems == (
        [
            f"trainer.max_epochs=4: the checkpoint {path} is already in epoch 5; "
            "give trainer.max_epochs=5 or more to resume it"
        ]
        if refused
        else []
    )
