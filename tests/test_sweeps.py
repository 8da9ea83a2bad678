"""Multirun with every strategy: one sweep directory, one job directory per combination,
every rank of a job in that job's directory with that job's parameters, each job
trained once; Optuna trials the same; the submitit launcher on local processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PARITY_STRATEGIES, QUIET

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

SMALL = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=4",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def multirun(root: Path, *overrides: str, timeout: float = 400) -> str:
    """``python -m scaletrain.train -m ...`` started in ``root``; returns its output."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "scaletrain.train", "-m", *QUIET, *overrides],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def rank_overrides(log_file: Path) -> list[str]:
    """The 'rank N: overrides ...' lines a rank wrote: one per training."""
    return [
        line.split(": overrides ", 1)[1]
        for line in log_file.read_text().splitlines()
        if ": overrides " in line
    ]


def only_sweep_dir(root: Path) -> Path:
    """The one sweep directory (no runs/ of other ranks), its jobs in TensorBoard's index."""
    assert sorted(p.name for p in (root / "outputs").iterdir()) == ["multiruns", "tensorboard"]
    (sweep,) = (root / "outputs" / "multiruns").iterdir()
    listed = sorted(
        entry.resolve().parent.parent for entry in (root / "outputs" / "tensorboard").iterdir()
    )
    assert listed == sorted(path for path in sweep.iterdir() if path.name.isdigit())
    return sweep


# ddp, and the sharded strategies through the pipeline (FSDP2 over each stage)
SWEPT = {
    "ddp": PARITY_STRATEGIES["ddp"],
    "pipeline": [
        "strategy=pipeline",
        "trainer.devices=2",
        "strategy.microbatches=2",
        "model.net.hidden_dims=[32,32]",  # a block for each of the 2 stages
    ],
}


@pytest.mark.parametrize("strategy", list(SWEPT))
def test_sweep_with_a_distributed_strategy_runs_each_job_once_in_its_directory(tmp_path, strategy):
    multirun(tmp_path, "model.optimizer.lr=0.001,0.003", *SMALL, *SWEPT[strategy])
    sweep = only_sweep_dir(tmp_path)
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for job, lr in (("0", "0.001"), ("1", "0.003")):
        job_dir = sweep / job
        assert (job_dir / "metrics.json").is_file()
        (rank0,) = rank_overrides(job_dir / "train.log")
        (rank1,) = rank_overrides(job_dir / "train.rank1.log")
        assert rank0 == rank1
        assert f"model.optimizer.lr={lr}" in rank0.split()
    summary = json.loads((sweep / "summary.json").read_text())
    assert [job["job"] for job in summary["jobs"]] == ["0", "1"]


def test_optuna_search_with_ddp_gives_every_rank_the_trial_parameters(tmp_path):
    output = multirun(
        tmp_path,
        "hparams_search=digits_optuna",
        "hydra.sweeper.n_trials=2",
        *SMALL,
        *PARITY_STRATEGIES["ddp"],
    )
    # quiet: the sweep's own lines, not its libraries' (alembic's plugins, Optuna's study)
    assert "alembic" not in output and "A new study created" not in output
    sweep = only_sweep_dir(tmp_path)
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["optimized_metric"] == "val/acc_best" and summary["mode"] == "max"
    assert len(summary["jobs"]) == 2
    sampled = []
    for job in summary["jobs"]:
        (rank0,) = rank_overrides(sweep / job["job"] / "train.log")
        (rank1,) = rank_overrides(sweep / job["job"] / "train.rank1.log")
        assert rank0 == rank1 == " ".join(job["overrides"])
        sampled.append([o for o in job["overrides"] if o.startswith("model.optimizer.lr=")])
        assert isinstance(job["metrics"]["val/acc_best"], float)
    assert sampled[0] != sampled[1]  # two trials, two learning rates
    best = max(summary["jobs"], key=lambda job: job["metrics"]["val/acc_best"])
    assert summary["best"]["job"] == best["job"]
    assert (sweep / "optimization_results.yaml").is_file()


def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    multirun(tmp_path, "hydra/launcher=submitit_local", "model.optimizer.lr=0.001,0.003", *SMALL)
    sweep = only_sweep_dir(tmp_path)
    summary = json.loads((sweep / "summary.json").read_text())
    assert [job["job"] for job in summary["jobs"]] == ["0", "1"]
    assert (sweep / ".submitit").is_dir()
