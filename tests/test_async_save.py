"""Checkpoints written in the background (``callbacks.last_checkpoint.async_save=true``):
training goes on during the write, and what is written is the state of the step the save
was made at, bit for bit as a synchronous save writes it (a write from live tensors would
mix later steps into it)."""

import json
from pathlib import Path

import pytest
import torch

from scaletrain.checkpoint.consolidate import consolidate, is_sharded_checkpoint
from tests.helpers import PARITY_STRATEGIES, run_cli

pytestmark = pytest.mark.slow  # training runs as subprocesses

# a checkpoint of 13 MB (weights and Adam's state), saved every 5 steps, all kept
RUN = [
    "model.net.hidden_dims=[1024,1024]",
    "callbacks.last_checkpoint.every_n_train_steps=5",
    "callbacks.last_checkpoint.keep_last=100",
    "trainer.max_steps=30",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=2",
    "test=false",
]


def whole(path: Path, scratch: Path) -> dict:
    """A checkpoint file, or a sharded one consolidated, loaded."""
    if is_sharded_checkpoint(path):
        path = consolidate(path, scratch / f"{path.parent.parent.name}-{path.name}")
    return torch.load(path, weights_only=False)


def state_at(run, step: int, scratch: Path) -> dict:
    return whole(run.run_dir / "checkpoints" / f"step-{step:06d}.ckpt", scratch)


def assert_same(found, expected, where: str = "") -> None:
    if isinstance(expected, torch.Tensor):
        assert torch.equal(found, expected), where
    elif isinstance(expected, dict):
        assert found.keys() == expected.keys(), where
        for key in expected:
            assert_same(found[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list | tuple):
        assert len(found) == len(expected), where
        for index, (a, b) in enumerate(zip(found, expected, strict=True)):
            assert_same(a, b, f"{where}/{index}")


@pytest.mark.parametrize("layout", ["single", "fsdp"])
def test_a_background_save_holds_its_own_step_while_training_goes_on(tmp_path, layout):
    strategy = PARITY_STRATEGIES[layout] if layout != "single" else []
    overlap = tmp_path / "overlap.json"
    callback = f"+callbacks.overlap={{_target_: tests.write_overlap.WriteOverlap, path: {overlap}}}"
    background = run_cli(
        "train",
        tmp_path / "async",
        *RUN,
        *strategy,
        "callbacks.last_checkpoint.async_save=true",
        "callbacks.model_checkpoint.async_save=true",
        callback,
    )
    assert background.returncode == 0, background.output
    synchronous = run_cli("train", tmp_path / "sync", *RUN, *strategy)
    assert synchronous.returncode == 0, synchronous.output

    record = json.loads((tmp_path / "overlap.json.rank0").read_text())
    assert record["writes"] >= 6
    assert record["steps"], "no step ran while a checkpoint was being written"
    for step in (5, 10, 15, 20, 25, 30):
        found, expected = (
            state_at(background, step, tmp_path),
            state_at(synchronous, step, tmp_path),
        )
        assert found["global_step"] == step
        for part in ("state_dict", "optimizer_states", "loops"):
            assert_same(found[part], expected[part], f"step {step} {part}")
    assert background.metrics["global_step"] == synchronous.metrics["global_step"] == 30
    # the best checkpoint, written in the background too, is the synchronous one's
    best = Path(background.metrics["best_checkpoint"])
    assert best.name == Path(synchronous.metrics["best_checkpoint"]).name
    found = whole(best, tmp_path)
    expected = whole(Path(synchronous.metrics["best_checkpoint"]), tmp_path)
    assert_same(found["state_dict"], expected["state_dict"], "best")
