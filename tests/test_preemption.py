"""Preemption and dead ranks.

SIGTERM or SIGINT, sent to every rank (as schedulers and Ctrl+C do) or to one rank only,
stops every rank at the same step; last.ckpt is saved there, the job exits with 143, and
``ckpt_path=last`` in the same run directory continues from it.

A rank killed outright ends the whole job with an error well within 60 seconds, and the
checkpoints saved before stay intact.
"""

import os
import signal
import time

import pytest
import torch

from tests.conftest import run_cli, start_cli

TWO_RANKS = ["strategy=ddp", "trainer.devices=2"]
LONG = ["trainer.max_epochs=1000", "+callbacks.model_checkpoint.every_n_train_steps=5"]


def start_training(tmp_path, *layout):
    """A long run, returned once it has trained a few steps on every rank."""
    job = start_cli("train", tmp_path / "run", f"paths.root_dir={tmp_path}", *layout, *LONG)
    last = job.run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists():
        assert job.process.poll() is None, job.output
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.1)
    return job


@pytest.mark.parametrize(
    ("layout", "signum", "target"),
    [
        ([], signal.SIGTERM, "all"),
        ([], signal.SIGINT, "all"),
        (TWO_RANKS, signal.SIGTERM, "all"),
        (TWO_RANKS, signal.SIGINT, "rank1"),
    ],
    ids=["single-sigterm", "single-sigint", "ddp-sigterm-every-rank", "ddp-sigint-rank1-only"],
)
def test_signal_saves_last_checkpoint_and_resume_continues(tmp_path, layout, signum, target):
    job = start_training(tmp_path, *layout)
    if target == "all":
        job.signal_all(signum)
    else:
        os.kill(job.rank_pids()[1], signum)
    assert job.wait(timeout=120) == 143, job.output
    job.wait_until_gone(timeout=30)

    saved = torch.load(job.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    step = saved["global_step"]
    assert f"stopped by a signal at step {step}: saved" in job.output
    assert f"resume with: ckpt_path=last hydra.run.dir={job.run_dir}" in job.output
    if layout:  # rank 1 stopped at the same step, and its process is gone
        assert (
            f"stopped by a signal at step {step}" in (job.run_dir / "train.rank1.log").read_text()
        )

    resumed = run_cli(
        "train",
        job.run_dir,
        f"paths.root_dir={tmp_path}",
        *layout,
        "ckpt_path=last",
        f"trainer.max_steps={step + 5}",
        "trainer.max_epochs=1000",
        "test=false",
    )
    assert resumed.returncode == 0, resumed.output
    assert resumed.metrics["global_step"] == step + 5


@pytest.mark.parametrize("rank", [1, 0])
def test_a_killed_rank_ends_the_job_within_60_seconds(tmp_path, rank):
    job = start_training(tmp_path, *TWO_RANKS)
    last = job.run_dir / "checkpoints" / "last.ckpt"
    os.kill(job.rank_pids()[rank], signal.SIGKILL)
    killed_at = time.monotonic()
    job.wait_until_gone(timeout=60)
    print(f"every process gone {time.monotonic() - killed_at:.1f} s after the kill")

    assert job.process.returncode != 0
    if rank == 1:  # rank 0 survived the kill and says why it stops
        assert "error: lost contact with another rank of this job" in job.output, job.output
    assert torch.load(last, weights_only=True)["global_step"] >= 5  # intact
