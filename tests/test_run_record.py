"""A run directory that a user can trust: last.ckpt is the latest state even after the
metric plateaus, ``resume=<run dir>`` continues a run with its own settings and records
each attempt beside the earlier ones, and a command that fails its preflight leaves
nothing behind."""

import hashlib
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers import CLI_ENV, run_cli, run_here, start_cli

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

STEPS_PER_EPOCH = 39  # the digits training split at the default global batch of 32


def files_digest(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def saved_epoch(path: Path) -> int | None:
    try:
        return torch.load(path, weights_only=True)["epoch"]
    except (FileNotFoundError, RuntimeError, EOFError):
        return None


def test_last_checkpoint_is_the_latest_state_after_a_plateau_and_resumes_from_there(tmp_path):
    """The default run at lr 3e-3: val/acc stops improving long before the last epoch
    (at epoch 15 of 40). last.ckpt still holds the last epoch, and a run killed after the
    plateau resumes from the epoch it reached, ending bit-identical to the uninterrupted
    run."""
    common = [
        f"paths.root_dir={tmp_path}",
        "trainer.max_epochs=40",
        "model.optimizer.lr=3e-3",
        "test=false",
    ]
    straight = run_here("train", tmp_path / "straight", *common)  # the kill needs a process
    assert straight.returncode == 0, straight.output
    best = Path(straight.metrics["best_checkpoint"])
    best_epoch = int(re.match(r"epoch(\d+)", best.name).group(1))
    assert best_epoch <= 30, f"no plateau: the best epoch is {best_epoch} of 40"
    last = torch.load(straight.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["epoch"], last["global_step"]) == (39, 40 * STEPS_PER_EPOCH)
    assert torch.load(best, weights_only=True)["epoch"] == best_epoch  # the best stays the best

    kill_after = best_epoch + 3  # epochs after the last improvement
    job = start_cli("train", tmp_path / "killed", *common)
    last_path = job.run_dir / "checkpoints" / "last.ckpt"
    job.wait_for(
        lambda: (saved_epoch(last_path) or 0) >= kill_after, "no checkpoint after the plateau"
    )
    job.signal_all(signal.SIGKILL)
    job.wait(timeout=30)
    killed_step = torch.load(last_path, weights_only=True)["global_step"]
    assert killed_step >= (kill_after + 1) * STEPS_PER_EPOCH

    resumed = run_cli("train", job.run_dir, f"resume={job.run_dir}")
    assert resumed.returncode == 0, resumed.output
    assert f"resuming from {last_path} (step {killed_step})" in resumed.output
    expected = torch.load(straight.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    final = torch.load(last_path, weights_only=True)
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name


def test_resume_repeats_the_runs_settings_and_records_each_attempt(train_here, tmp_path):
    # a net of another shape than the default's: a resume without it could not load
    first = train_here("model.net.hidden_dims=[32]", "trainer.max_epochs=2", "test=false")
    assert first.returncode == 0, first.output
    record = first.run_dir / ".hydra"

    # the settings of the run left out: refused in one line, and nothing is written
    before = files_digest(first.run_dir)
    refused = run_cli("train", first.run_dir, "ckpt_path=last")
    assert refused.returncode == 2
    assert "belongs to another model" in refused.stderr
    assert f"python -m scaletrain.train resume={first.run_dir} resumes with the run's own" in (
        refused.stderr
    )
    assert files_digest(first.run_dir) == before

    resumed = run_cli("train", first.run_dir, f"resume={first.run_dir}", "trainer.max_epochs=3")
    assert resumed.returncode == 0, resumed.output
    assert resumed.metrics["global_step"] == 3 * STEPS_PER_EPOCH
    after = files_digest(record)
    assert all(
        after[name] == before[f".hydra/{name}"] for name in ("config.yaml", "overrides.yaml")
    )
    second = yaml.safe_load((record / "attempt-2" / "overrides.yaml").read_text())
    assert "model.net.hidden_dims=[32]" in second
    assert "trainer.max_epochs=3" in second and "trainer.max_epochs=2" not in second
    assert "ckpt_path=last" in second
    assert (
        yaml.safe_load((record / "attempt-2" / "config.yaml").read_text())["trainer"]["max_epochs"]
        == 3
    )

    # a third attempt repeats the second's settings
    third = run_cli("train", first.run_dir, f"resume={first.run_dir}", "trainer.max_epochs=4")
    assert third.returncode == 0, third.output
    assert third.metrics["global_step"] == 4 * STEPS_PER_EPOCH
    assert (record / "attempt-3" / "overrides.yaml").is_file()


def test_a_run_that_fails_its_preflight_leaves_no_directory_and_says_why_on_stderr(tmp_path):
    bad = [
        "model.optimizer.lr=-1",
        "trainer.max_epochs=abc",
        "trainer.accumulate_grad_batches=0",
        "monitor.metric=val/accuracy",
    ]
    run = run_cli("train", tmp_path / "bad", f"paths.root_dir={tmp_path}", *bad)
    assert run.returncode == 2
    assert run.stdout == ""
    assert run.stderr.splitlines() == [
        "error: trainer.max_epochs=abc: must be an integer or null",
        "error: model.optimizer.lr=-1: must be a positive finite number",
        "error: trainer.accumulate_grad_batches=0: must be a positive integer",
        "error: monitor.metric=val/accuracy: Classifier never logs it; valid: train/loss, "
        "val/loss, test/loss, val/acc, val/acc_best, test/acc",
    ]
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_whose_first_job_fails_its_preflight_leaves_no_directory(tmp_path):
    command = ["-m", f"paths.root_dir={tmp_path}", "model.optimizer.lr=-1,1e-3"]
    run = subprocess.run(
        [sys.executable, "-m", "scaletrain.train", *command],
        cwd=tmp_path,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2
    assert "error: model.optimizer.lr=-1: must be a positive finite number" in run.stderr
    # nothing but the (empty) log directory itself, which a checkout has already
    assert [path.name for path in tmp_path.rglob("*")] == ["outputs"]
