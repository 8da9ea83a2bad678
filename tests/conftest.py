"""Shared helpers: run the real command-line entry points in a subprocess."""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from scaletrain.config import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
# Quiet, fast runs: no progress bars; everything else is the user's default config.
QUIET = ["callbacks.rich_progress_bar=null", "trainer.enable_progress_bar=false"]


@dataclass
class Run:
    """A finished command: its exit code, output and run directory."""

    returncode: int
    output: str
    run_dir: Path

    @property
    def metrics(self) -> dict:
        return json.loads((self.run_dir / "metrics.json").read_text())


def compose_train(*overrides: str):
    """The composed train config, as the command line would build it, without running it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides])


def run_cli(module: str, run_dir: Path, *overrides: str, timeout: float = 300) -> Run:
    """``python -m scaletrain.<module> overrides...`` writing into ``run_dir``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", f"scaletrain.{module}", *QUIET, *overrides]
    command.append(f"hydra.run.dir={run_dir}")
    result = subprocess.run(
        command, cwd=run_dir.parent, env=env, capture_output=True, text=True, timeout=timeout
    )
    return Run(result.returncode, result.stdout + result.stderr, run_dir)


@pytest.fixture
def train_cli(tmp_path):
    """Run ``scaletrain.train`` in a fresh directory under tmp_path; returns the Run."""

    def run(*overrides: str, name: str = "run", **kwargs) -> Run:
        return run_cli("train", tmp_path / name, f"paths.root_dir={tmp_path}", *overrides, **kwargs)

    return run


@pytest.fixture
def eval_cli(tmp_path):
    def run(*overrides: str, name: str = "eval", **kwargs) -> Run:
        return run_cli("eval", tmp_path / name, f"paths.root_dir={tmp_path}", *overrides, **kwargs)

    return run
