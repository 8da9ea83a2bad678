"""A run killed with SIGKILL at a given step (every rank at once, as a lost node or
an out-of-memory killer would), restarted with the same run directory and
``ckpt_path=last``, ends with weights bit-identical to an uninterrupted run's, and
reports the same metrics."""

import signal
from pathlib import Path

import pytest
import torch

from scaletrain.checkpoint.consolidate import consolidate, is_sharded_checkpoint
from tests.helpers import run_cli, run_here, start_cli

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

MAX_STEPS = 60  # 1.5 epochs of 39 steps
SAVE_EVERY_STEP = [
    "test=false",
    f"trainer.max_steps={MAX_STEPS}",
    "trainer.max_epochs=-1",
    # a save at every step, so that the kill often lands inside one
    "callbacks.last_checkpoint.every_n_train_steps=1",
    "callbacks.model_checkpoint.monitor=null",
    "callbacks.model_checkpoint.save_top_k=0",
]
# ddp saves one file from rank 0, as a single process does; fsdp saves shards from each rank
LAYOUTS = {"single": [], "fsdp": ["strategy=fsdp", "trainer.devices=2"]}
# Where each layout is killed: a run stalled there by a callback, so that a failure
# reproduces. single: at the start of the second epoch, when last.ckpt is the save at the
# first epoch's end (step 39, after its validation); fsdp: mid-epoch, after step 17.
KILL_AT = {
    "single": {"hook": "on_train_epoch_start", "after_step": 39},
    "fsdp": {"hook": "on_train_batch_end", "after_step": 17},
}


def saved_step(path: Path) -> int | None:
    """The step of the checkpoint at ``path``; None while there is none (or it is being
    swapped in)."""
    try:
        meta = path / "meta.pt" if path.is_dir() else path
        return torch.load(meta, weights_only=True)["global_step"]
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, RuntimeError, EOFError):
        return None


def final_weights(path: Path, scratch: Path) -> dict[str, torch.Tensor]:
    if is_sharded_checkpoint(path):
        path = consolidate(path, scratch / f"{path.parent.parent.name}.ckpt")
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sigkill_then_resume_gives_bit_identical_weights(tmp_path, layout):
    common = [f"paths.root_dir={tmp_path}", *SAVE_EVERY_STEP, *LAYOUTS[layout]]
    # one process: in this process (the kill and the resume are command lines)
    straight = (run_cli if layout != "single" else run_here)(
        "train", tmp_path / "straight", *common
    )
    assert straight.returncode == 0, straight.output

    kill_at, marker = KILL_AT[layout], tmp_path / "stalled"
    stall = (
        f"{{_target_: tests.stall.Stall, marker: {marker}, hook: {kill_at['hook']}, "
        f"after_step: {kill_at['after_step']}}}"
    )
    job = start_cli("train", tmp_path / "killed", *common, f"+callbacks.stall={stall}")
    job.wait_for(marker.exists, "the run never reached the kill point")
    last = job.run_dir / "checkpoints" / "last.ckpt"
    kill_after = saved_step(last)
    assert kill_after is not None and kill_after <= kill_at["after_step"]
    job.signal_all(signal.SIGKILL)
    assert job.wait(timeout=30) == -signal.SIGKILL

    resumed = run_cli("train", job.run_dir, *common, "ckpt_path=last")
    assert resumed.returncode == 0, resumed.output
    assert f"resuming from {last}" in resumed.output
    assert resumed.metrics["global_step"] == MAX_STEPS
    # the last validation before the kill is reported, as the uninterrupted run reports it
    # (train/loss is left out: a kill after the final save can leave the resume nothing to
    # train, and it then reports the loss logged before that save)
    validation = {k: v for k, v in straight.metrics["metrics"].items() if k.startswith("val/")}
    assert (
        validation
        and {k: v for k, v in resumed.metrics["metrics"].items() if k.startswith("val/")}
        == validation
    )
    assert resumed.metrics["best_score"] == straight.metrics["best_score"]

    expected = final_weights(straight.run_dir / "checkpoints" / "last.ckpt", tmp_path)
    weights = final_weights(last, tmp_path)
    assert weights.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), f"{name}, killed after step {kill_after}"
