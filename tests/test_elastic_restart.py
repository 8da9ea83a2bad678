"""A worker killed mid-run under torchrun's elastic agent (``--max-restarts``): the agent
restarts the workers, they resume from the run's last complete checkpoint by themselves,
and the job ends as the uninterrupted one does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import QUIET, REPO

pytestmark = pytest.mark.slow  # training runs under torchrun

RUN = [
    "strategy=ddp",
    "trainer.devices=2",
    "callbacks.last_checkpoint.every_n_train_steps=5",
    "trainer.max_steps=30",
    "trainer.val_check_interval=10",
    "trainer.limit_val_batches=4",
    "trainer.limit_test_batches=4",
    *QUIET,
]
# rank 1 dies by SIGKILL as step 10 begins, after the save at step 10
KILL = "+callbacks.kill={_target_: tests.kill_rank.KillRank, rank: 1, at_step: 10}"


def torchrun(run_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
        "--max-restarts=1", "-m", "scaletrain.train", *RUN, *overrides,
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        command, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=600
    )


def outcome(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    return metrics, state["state_dict"]


def test_a_killed_worker_is_restarted_and_the_run_ends_as_if_uninterrupted(tmp_path):
    straight = torchrun(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = torchrun(tmp_path / "killed", KILL)
    assert killed.returncode == 0, killed.stderr[-3000:]
    output = killed.stdout + killed.stderr
    # the agent saw a worker fail: the killed one (-9), or, where its peer noticed the lost
    # contact first and stopped (exit 1), that one; either way it restarted them
    assert "exitcode: -9" in output or "exitcode: 1)" in output
    assert "restart 1 by torchrun's agent: resuming from the run's last.ckpt" in output
    assert f"resuming from {tmp_path / 'killed' / 'checkpoints' / 'last.ckpt'} (step 10)" in output

    expected, expected_weights = outcome(tmp_path / "straight")
    found, weights = outcome(tmp_path / "killed")
    assert found["global_step"] == expected["global_step"] == 30
    assert found["best_score"] == expected["best_score"]
    for name in ("val/acc", "val/loss", "val/acc_best", "test/acc", "test/loss"):
        assert found["metrics"][name] == expected["metrics"][name], name
    for name, value in expected_weights.items():
        assert torch.equal(weights[name], value), name
    # both attempts are in the run's record
    assert (tmp_path / "killed" / ".hydra" / "attempt-2").is_dir()
