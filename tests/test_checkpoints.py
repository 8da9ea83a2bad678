"""Checkpoints under every strategy: a checkpoint written by 2 ranks resumes on 2 ranks
and on 1 rank exactly where an uninterrupted run goes, eval reads it, and the sharded
form consolidates into one file that loads without any distributed setup."""

import shutil
import subprocess
import sys

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaletrain.checkpoint.consolidate import is_sharded_checkpoint
from scaletrain.data.digits import DigitsDataModule
from scaletrain.models.classifier import Classifier
from scaletrain.reporting.tensorboard import event_dir
from tests.helpers import run_cli, run_here

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

STEPS_PER_EPOCH = 39  # digits train split (1,258) // global batch 32
TOLERANCE = 1e-5
COMMON = ["trainer.log_every_n_steps=1"]
TWO_RANKS = {
    "fsdp": ["strategy=fsdp", "trainer.devices=2"],
    "model_sharded": ["strategy=model_sharded", "trainer.devices=2"],
}


def train_run(root, name, *overrides):
    """A training run: in this process where it has one process (the command line is not
    what these tests are about), as a command line where it has several."""
    command = [f"paths.root_dir={root}", *COMMON, *overrides]
    several = any(override.startswith("trainer.devices=") for override in overrides)
    run = (run_cli if several else run_here)("train", root / name, *command)
    assert run.returncode == 0, run.output
    return run


def losses_by_step(run) -> dict[int, float]:
    events = EventAccumulator(str(event_dir(run.run_dir)))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 3-epoch run, and 2-epoch runs written by 2 ranks and by one."""
    root = tmp_path_factory.mktemp("ckpt")
    written = {
        name: train_run(root, name, "trainer.max_epochs=2", *overrides)
        for name, overrides in {**TWO_RANKS, "single": ["test=false"]}.items()
    }
    straight = train_run(root, "straight", "trainer.max_epochs=3", "test=false")
    return root, written, straight


def test_sharded_strategies_write_distributed_checkpoints(runs):
    _, written, _ = runs
    for name in TWO_RANKS:
        run = written[name]
        assert is_sharded_checkpoint(run.run_dir / "checkpoints" / "last.ckpt")
        assert is_sharded_checkpoint(run.run_dir / "checkpoints" / "epoch001-step000078.ckpt")


@pytest.mark.parametrize(
    ("writer", "resume_overrides"),
    [
        ("fsdp", ["strategy=fsdp", "trainer.devices=2"]),
        ("fsdp", ["strategy=fsdp", "trainer.devices=1"]),
        ("single", ["strategy=fsdp", "trainer.devices=2"]),
        ("fsdp", []),
        ("model_sharded", []),
    ],
    ids=[
        "fsdp2-to-fsdp2",
        "fsdp2-to-fsdp1",
        "single-to-fsdp2",
        "fsdp2-to-single",
        "tp2-to-single",
    ],
)
def test_resume_continues_like_an_uninterrupted_run(runs, request, writer, resume_overrides):
    root, written, straight = runs
    last = written[writer].run_dir / "checkpoints" / "last.ckpt"
    name = request.node.callspec.id
    resumed = train_run(
        root, name, "trainer.max_epochs=3", "test=false", f"ckpt_path={last}", *resume_overrides
    )
    assert resumed.metrics["global_step"] == 3 * STEPS_PER_EPOCH
    resumed_losses, reference = losses_by_step(resumed), losses_by_step(straight)
    assert len(resumed_losses) == STEPS_PER_EPOCH  # only the third epoch's steps
    for step, loss in resumed_losses.items():
        assert abs(loss - reference[step]) <= TOLERANCE, f"step {step}"


def test_a_single_process_resumes_in_the_directory_of_an_fsdp_run(runs, tmp_path):
    """ckpt_path=last there reads the sharded last.ckpt, and the file it saves next takes
    the directory's place."""
    root, written, straight = runs
    run_dir = tmp_path / "run"
    shutil.copytree(written["fsdp"].run_dir, run_dir)
    resumed = train_run(tmp_path, "run", "trainer.max_epochs=3", "test=false", "ckpt_path=last")
    assert resumed.metrics["global_step"] == 3 * STEPS_PER_EPOCH
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file()
    assert torch.load(last, weights_only=True)["global_step"] == 3 * STEPS_PER_EPOCH
    reference = losses_by_step(straight)
    for step, loss in losses_by_step(resumed).items():
        assert abs(loss - reference[step]) <= TOLERANCE, f"step {step}"


def test_eval_reads_a_sharded_checkpoint_without_distributed_setup(runs):
    root, written, _ = runs
    training = written["model_sharded"]
    best = training.metrics["best_checkpoint"]
    evaluation = run_here("eval", root / "eval", f"paths.root_dir={root}", f"ckpt_path={best}")
    assert evaluation.returncode == 0, evaluation.output
    trained = training.metrics["metrics"]["test/acc"]
    assert abs(evaluation.metrics["metrics"]["test/acc"] - trained) <= 1e-3


def test_eval_reads_a_sharded_checkpoint_on_two_ranks(runs):
    root, written, _ = runs
    training = written["fsdp"]
    best = training.metrics["best_checkpoint"]
    evaluation = run_cli(
        "eval", root / "eval2", f"paths.root_dir={root}", f"ckpt_path={best}", *TWO_RANKS["fsdp"]
    )
    assert evaluation.returncode == 0, evaluation.output
    trained = training.metrics["metrics"]["test/acc"]
    assert abs(evaluation.metrics["metrics"]["test/acc"] - trained) <= 1e-3


def test_consolidated_checkpoint_loads_with_plain_torch(runs, tmp_path):
    _, written, _ = runs
    training = written["model_sharded"]
    output = tmp_path / "full.ckpt"
    command = [sys.executable, "-m", "scaletrain.consolidate", training.metrics["best_checkpoint"]]
    done = subprocess.run([*command, str(output)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

    checkpoint = torch.load(output, weights_only=True)  # plain tensors and containers only
    assert checkpoint["global_step"] == 2 * STEPS_PER_EPOCH
    assert checkpoint["state_dict"]["net.blocks.0.0.weight"].shape == (64, 64)  # whole, not a shard
    model = Classifier.load_from_checkpoint(output).eval()
    datamodule = DigitsDataModule()
    datamodule.setup()
    inputs, targets = datamodule.splits["test"][list(range(len(datamodule.splits["test"])))]
    with torch.no_grad():
        accuracy = (model(inputs).argmax(-1) == targets).float().mean().item()
    assert abs(accuracy - training.metrics["metrics"]["test/acc"]) <= 1e-3


def test_a_sharded_checkpoint_of_another_model_is_refused_before_training(runs, capsys):
    root, written, _ = runs
    last = written["fsdp"].run_dir / "checkpoints" / "last.ckpt"
    run = run_here(
        "train",
        root / "mismatch",
        f"paths.root_dir={root}",
        f"ckpt_path={last}",
        "model.net.hidden_dims=[32]",
    )
    assert run.returncode == 2
    assert (
        f"error: ckpt_path={last}: belongs to another model: net.blocks.0.0.weight is "
        "[64, 64] there, [32, 64] in this model"
    ) in capsys.readouterr().err


def test_consolidate_refuses_what_is_not_a_sharded_checkpoint(tmp_path):
    (tmp_path / "x.ckpt").write_bytes(b"not a checkpoint")
    done = subprocess.run(
        [sys.executable, "-m", "scaletrain.consolidate", str(tmp_path / "x.ckpt")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr.strip().startswith("error: ckpt_path=")
    assert "not a sharded checkpoint directory" in done.stderr
