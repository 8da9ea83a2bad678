"""Preemption, signals anywhere in a run, and dead ranks.

SIGTERM or SIGINT during training, sent to every rank (as schedulers and Ctrl+C do) or to
one rank only, stops every rank at the same step; last.ckpt is saved there, the job exits
with 143, and the resume command it prints continues from it. Anywhere else (before the
first step, validating, testing) and where a step outlasts the grace period, the run
ends promptly without saving, the last checkpoint intact; a second signal ends it at once.

A rank killed outright ends the whole job with an error within 5 seconds, and the
checkpoints saved before stay intact.
"""

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import resume_cli, start_cli

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

TWO_RANKS = ["strategy=ddp", "trainer.devices=2"]
LONG = ["trainer.max_epochs=1000", "callbacks.last_checkpoint.every_n_train_steps=5"]


def start_training(tmp_path, *layout):
    """A long run, returned once it has trained a few steps on every rank."""
    job = start_cli("train", tmp_path / "run", f"paths.root_dir={tmp_path}", *layout, *LONG)
    last = job.run_dir / "checkpoints" / "last.ckpt"
    job.wait_for(last.exists, "training did not start", poll=0.1)
    return job


@pytest.mark.parametrize(
    ("layout", "signum", "target"),
    [
        ([], signal.SIGTERM, "all"),
        (TWO_RANKS, signal.SIGTERM, "all"),
        (TWO_RANKS, signal.SIGINT, "rank1"),  # Ctrl+C reaching one rank only
    ],
    ids=["single-sigterm", "ddp-sigterm-every-rank", "ddp-sigint-rank1-only"],
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
    # a signal between two steps (during a periodic save or a validation) stops at once,
    # and the last complete checkpoint stays the state to resume from
    between_steps = "outside a training step: nothing saved" in job.output
    assert between_steps or f"stopped by a signal at step {step}: saved" in job.output
    assert f"resume with: python -m scaletrain.train resume={job.run_dir}" in job.output
    if layout:  # rank 1 stopped at the same step, and its process is gone
        assert (
            f"stopped by a signal at step {step}" in (job.run_dir / "train.rank1.log").read_text()
        )

    # the printed command, with the run's own settings left to it
    resumed = resume_cli(job.output, f"trainer.max_steps={step + 5}", "test=false")
    assert resumed.returncode == 0, resumed.output
    assert f"resuming from {job.run_dir / 'checkpoints' / 'last.ckpt'} (step {step})" in (
        resumed.output
    )
    assert resumed.metrics["global_step"] == step + 5


@pytest.mark.parametrize("rank", [1, 0])
def test_a_killed_rank_ends_the_job_within_5_seconds(tmp_path, rank):
    job = start_training(tmp_path, *TWO_RANKS)
    last = job.run_dir / "checkpoints" / "last.ckpt"
    os.kill(job.rank_pids()[rank], signal.SIGKILL)
    killed_at = time.monotonic()
    job.wait_until_gone(timeout=60)
    gone_after = time.monotonic() - killed_at
    assert gone_after < 5, f"processes of the job ran {gone_after:.1f} s after the kill"

    assert job.process.returncode != 0
    if rank == 1:  # rank 0 survived the kill and says why it stops, or Lightning does:
        # its watch over the ranks it started ends them all, itself included, when one
        # dies; on a busy machine that watch can act before rank 0's next collective fails
        said = (
            "error: lost contact with another rank of this job",
            "terminated with code -9. Forcefully terminating all other processes",
        )
        assert any(line in job.output for line in said), job.output
    assert torch.load(last, weights_only=True)["global_step"] >= 5  # intact


def stall_at(hook: str, marker: Path, **options) -> str:
    """The override that stalls the run at ``hook`` (see tests/stall.py)."""
    extra = "".join(f", {key}: {value}" for key, value in options.items())
    return (
        f"+callbacks.stall={{_target_: tests.stall.Stall, hook: {hook}, marker: '{marker}'{extra}}}"
    )


def start_stalled(tmp_path, hook: str, *overrides: str, **options):
    """A run stalled at ``hook``, returned once it is there."""
    marker = tmp_path / "stalled"
    job = start_cli(
        "train",
        tmp_path / "run",
        f"paths.root_dir={tmp_path}",
        stall_at(hook, marker, **options),
        *overrides,
    )
    job.wait_for(marker.exists, f"the run never reached {hook}", poll=0.05)
    return job


def stop_within(job, seconds: float) -> float:
    """Wait for the job's exit status; it must come within ``seconds``. Returns the time."""
    started = time.monotonic()
    assert job.wait(timeout=seconds + 30) == 143, job.output
    elapsed = time.monotonic() - started
    assert elapsed < seconds, f"took {elapsed:.1f} s: {job.output}"
    job.wait_until_gone(timeout=10)
    return elapsed


@pytest.mark.parametrize(
    ("hook", "layout"),
    [("setup", []), ("setup", TWO_RANKS)],
    ids=["setup", "setup-ddp"],
)
def test_a_signal_before_the_first_step_ends_the_run_at_once(tmp_path, hook, layout):
    job = start_stalled(tmp_path, hook, *layout)
    job.signal_all(signal.SIGTERM)
    stop_within(job, 10)
    assert "stopped by SIGTERM outside a training step: nothing saved" in job.output
    assert not (job.run_dir / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("layout", [[], TWO_RANKS], ids=["single", "ddp"])
def test_a_signal_during_validation_ends_the_run_and_keeps_the_last_checkpoint(tmp_path, layout):
    # stalls in the second epoch's validation; last.ckpt holds the end of the first epoch
    job = start_stalled(tmp_path, "on_validation_batch_start", *layout, after_step=40)
    job.signal_all(signal.SIGINT)
    stop_within(job, 10)
    assert "stopped by SIGINT outside a training step: nothing saved" in job.output
    saved = torch.load(job.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 39


def test_a_signal_during_testing_ends_the_run(tmp_path):
    job = start_stalled(tmp_path, "on_test_batch_start", "trainer.max_epochs=1")
    job.signal_all(signal.SIGTERM)
    stop_within(job, 10)
    assert not (job.run_dir / "metrics.json").exists()
    saved = torch.load(job.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 39


def test_a_step_that_outlasts_the_grace_period_ends_the_run_without_saving(tmp_path):
    job = start_stalled(
        tmp_path,
        "on_before_optimizer_step",
        "callbacks.checkpoint_on_preemption.grace_period=2",
        "callbacks.last_checkpoint.every_n_train_steps=5",
        after_step=12,
    )
    job.signal_all(signal.SIGTERM)
    elapsed = stop_within(job, 10)
    assert elapsed >= 2  # the grace period was given
    assert "no training step ended within callbacks.checkpoint_on_preemption.grace_period=2 s" in (
        job.output
    )
    saved = torch.load(job.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 10  # the last one saved before the signal, intact


def test_a_second_signal_exits_at_once(tmp_path):
    job = start_stalled(tmp_path, "on_before_optimizer_step", after_step=3)
    job.signal_all(signal.SIGTERM)
    time.sleep(1)
    job.signal_all(signal.SIGINT)
    stop_within(job, 5)
    assert "error: SIGINT again: exiting now" in job.output
