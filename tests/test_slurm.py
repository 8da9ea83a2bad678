"""scaletrain on a real SLURM cluster: a single-node cluster on this machine
(``bash scripts/slurm_local.sh start``, which ``.ci/run`` does), submitted to through the
real ``sbatch``, by the submitit launcher and by scripts/slurm.sbatch.

A sweep on CPUs; a request the partition cannot satisfy, refused before submitting; a
job that can never start, reported and cancelled; a 2-rank ddp job that meets its time
limit, is requeued and resumes until it ends with the metrics of an uninterrupted run;
and the batch script's own requeue after the signal a time limit sends.
"""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import CLI_ENV, QUIET, REPO, run_cli


def cluster_up() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    done = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    return done.returncode == 0 and any(s in done.stdout for s in ("idle", "mix", "alloc"))


pytestmark = [
    pytest.mark.slow,
    pytest.mark.slurm,
    pytest.mark.skipif(
        not cluster_up(),
        reason="no SLURM cluster answers: apt-get install slurm-wlm munge, then "
        "bash scripts/slurm_local.sh start",
    ),
]

SMALL = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]
# 2 ranks for 80 steps: two epochs of 39 batches, each validated, then 2 more steps
DDP_RUN = [
    "trainer=cpu",
    "strategy=ddp",
    "trainer.devices=2",
    "trainer.max_epochs=-1",
    "trainer.max_steps=80",
    "trainer.limit_val_batches=2",
    "test=false",
]


def stall(marker: Path, seconds: float, after_step: int = 0) -> str:
    """Each training step takes ``seconds`` longer, without using the CPU (tests/stall.py)."""
    return (
        "+callbacks.stall={_target_: tests.stall.Stall, hook: on_train_batch_end, "
        f"marker: '{marker}', seconds: {seconds}, after_step: {after_step}}}"
    )


def slurm_sweep(
    root: Path, *overrides: str, timeout: float = 400, background: bool = False
) -> subprocess.CompletedProcess:
    """``python -m scaletrain.train -m hydra/launcher=slurm ...`` started in ``root``;
    ``background``: ignoring SIGINT, as a non-interactive shell starts a command with ``&``."""
    ignore_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if background else None
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "scaletrain.train",
            "-m",
            "hydra/launcher=slurm",
            *QUIET,
            *overrides,
        ],
        cwd=root,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=ignore_sigint,
    )


def sweep_dir(root: Path) -> Path:
    (sweep,) = (root / "outputs" / "multiruns").iterdir()
    return sweep


def validation(summary: dict) -> dict:
    """A run's validation metrics. (train/loss is left out: an attempt stopped at the final
    step leaves the last one nothing to train, and it reports the loss logged before.)"""
    return {k: v for k, v in summary["metrics"].items() if k.startswith("val/")}


def queued(job_id: str) -> bool:
    done = subprocess.run(["squeue", "-h", "-j", job_id], capture_output=True, text=True)
    return bool(done.stdout.strip())


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(1)


@pytest.fixture(scope="module")
def uninterrupted_ddp(tmp_path_factory) -> dict:
    """The metrics of the 2-rank run trained straight through, here, without SLURM."""
    root = tmp_path_factory.mktemp("straight")
    run = run_cli("train", root / "run", *DDP_RUN, f"paths.root_dir={root}")
    assert run.returncode == 0, run.output
    return run.metrics


def test_a_cpu_sweep_runs_each_job_in_its_directory_and_writes_the_summary(tmp_path):
    done = slurm_sweep(tmp_path, "trainer=cpu", "model.optimizer.lr=0.001,0.003", *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    sweep = sweep_dir(tmp_path)
    summary = json.loads((sweep / "summary.json").read_text())
    assert [job["job"] for job in summary["jobs"]] == ["0", "1"]
    assert summary["best"] is not None
    for job in ("0", "1"):
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
        assert list((sweep / job / "tensorboard").rglob("events.out.tfevents.*"))


def test_a_request_the_partition_cannot_satisfy_is_refused_before_submitting(tmp_path):
    done = slurm_sweep(tmp_path, "trainer=cpu", "hydra.launcher.cpus_per_task=512", timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert re.search(
        r"^error: hydra\.launcher\.cpus_per_task=512 x tasks_per_node=1 \(trainer\.devices\) = "
        r"512 CPUs on a node: a node of partition debug has \d+$",
        done.stderr,
        re.MULTILINE,
    ), done.stderr
    assert "error: nothing was submitted" in done.stderr
    assert not list(tmp_path.rglob("*_submission.sh"))


def test_a_job_that_can_never_start_is_reported_and_cancelled(tmp_path):
    # partition onecpu lets a job use one CPU of its node: 2 tasks wait there forever
    done = slurm_sweep(
        tmp_path, "trainer=cpu", "strategy=ddp", "trainer.devices=2",
        "hydra.launcher.partition=onecpu", timeout=120, background=True,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    match = re.search(r"error: SLURM job (\S+) can never start: PartitionConfig", done.stderr)
    assert match, done.stderr
    assert "error: the sweep's SLURM jobs were cancelled" in done.stderr
    job_id = match.group(1).split("_")[0]
    wait_until(lambda: not queued(job_id), 30, f"job {job_id} still queued")


def test_a_ddp_job_at_its_time_limit_saves_requeues_and_ends_as_if_uninterrupted(
    tmp_path, uninterrupted_ddp
):
    # 80 steps of at least a second: longer than the 2-minute limit's warning, which
    # SLURM sends 60-90 s into the job (signal_delay_s=30, checked every 30 s)
    done = slurm_sweep(
        tmp_path,
        *DDP_RUN,
        stall(tmp_path / "stalled", 1.0),
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=30",
        timeout=500,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    job = sweep_dir(tmp_path) / "0"
    log = (job / "train.log").read_text()
    stops = re.findall(r"stopped by a signal at step (\d+): saved", log)
    assert stops, log
    assert f"resuming from {job / 'checkpoints' / 'last.ckpt'} (step {stops[0]})" in log
    # the other rank stopped at the same step and saved with it
    rank1 = (job / "train.rank1.log").read_text()
    assert re.findall(r"stopped by a signal at step (\d+)", rank1) == stops
    submitit_logs = "".join(p.read_text() for p in job.parent.rglob(".submitit/*/*_log.*"))
    assert "Requeued job" in submitit_logs
    summary = json.loads((job / "metrics.json").read_text())
    assert summary["global_step"] == 80
    assert validation(summary) == pytest.approx(validation(uninterrupted_ddp), rel=1e-6)
    assert summary["best_score"] == pytest.approx(uninterrupted_ddp["best_score"], rel=1e-6)
    assert (job.parent / "summary.json").is_file()


def test_the_batch_script_requeues_itself_after_the_time_limit_warning(tmp_path, uninterrupted_ddp):
    run_dir, marker = tmp_path / "run", tmp_path / "step10"
    submitted = subprocess.run(
        [
            "sbatch", "--parsable", "--ntasks-per-node=2", f"--output={tmp_path}/slurm.out",
            "scripts/slurm.sbatch", *QUIET, *DDP_RUN[1:], f"paths.root_dir={tmp_path}",
            stall(marker, 0.2, after_step=10),
        ],
        cwd=REPO, env={**CLI_ENV, "RUN_DIR": str(run_dir)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    job_id = submitted.stdout.strip().split(";")[0]
    try:
        wait_until(marker.exists, 120, "the job did not reach step 10")
        # what SLURM sends each task of the job --signal's seconds before the time limit
        subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
        wait_until(lambda: not queued(job_id), 240, f"job {job_id} did not end")
    finally:
        subprocess.run(["scancel", job_id])
    output = (tmp_path / "slurm.out").read_text()
    assert "requeueing job" in output and "(attempt 2)" in output, output
    stops = re.findall(r"stopped by a signal at step (\d+): saved", output)
    assert len(stops) == 2 and stops[0] == stops[1], output  # both ranks, the same step
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["global_step"] == 80
    assert validation(summary) == pytest.approx(validation(uninterrupted_ddp), rel=1e-6)
