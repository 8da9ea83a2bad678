"""SIGTERM or SIGINT stops a single-process run at a step boundary with status 143 after
saving last.ckpt; ``ckpt_path=last`` in the same run directory continues from there."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import QUIET, REPO, run_cli


def start_training(tmp_path, *layout):
    """A long run, returned once its first optimizer step is done."""
    run_dir = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "scaletrain.train",
        *QUIET,
        *layout,
        "trainer.max_epochs=1000",
        f"hydra.run.dir={run_dir}",
        f"paths.root_dir={tmp_path}",
    ]
    job = subprocess.Popen(
        command,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = run_dir / "train.log"
    deadline = time.monotonic() + 120
    while not (log.is_file() and "model state" in log.read_text()):
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)
    return job, run_dir


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_signal_saves_last_checkpoint_and_resume_continues(tmp_path, signum):
    job, run_dir = start_training(tmp_path)
    job.send_signal(signum)
    output = job.communicate(timeout=120)[0]
    assert job.returncode == 143, output

    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    step = saved["global_step"]
    assert step > 0
    assert f"stopped by a signal at step {step}" in (run_dir / "train.log").read_text()

    resumed = run_cli(
        "train",
        run_dir,
        f"paths.root_dir={tmp_path}",
        "ckpt_path=last",
        f"trainer.max_steps={step + 5}",
        "trainer.max_epochs=1000",
        "test=false",
    )
    assert resumed.returncode == 0, resumed.output
    assert resumed.metrics["global_step"] == step + 5
