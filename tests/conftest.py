"""Shared helpers: run the real command-line entry points in a subprocess."""

import json
import os
import signal
import subprocess
import sys
import time
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
    stdout: str = ""
    stderr: str = ""

    @property
    def metrics(self) -> dict:
        return json.loads((self.run_dir / "metrics.json").read_text())


def compose_train(*overrides: str):
    """The composed train config, as the command line would build it, without running it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=["paths.output_dir=/tmp/unused", *overrides])


# PYTHONPATH: runs may use test helpers as config targets (tests.stall.Stall)
CLI_ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def cli_command(module: str, run_dir: Path, *overrides: str) -> list[str]:
    """The command line of ``python -m scaletrain.<module> overrides...`` into ``run_dir``."""
    return [
        sys.executable,
        "-m",
        f"scaletrain.{module}",
        *QUIET,
        *overrides,
        f"hydra.run.dir={run_dir}",
    ]


def run_cli(module: str, run_dir: Path, *overrides: str, timeout: float = 300) -> Run:
    """``python -m scaletrain.<module> overrides...`` writing into ``run_dir``."""
    result = subprocess.run(
        cli_command(module, run_dir, *overrides),
        cwd=run_dir.parent,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(
        result.returncode, result.stdout + result.stderr, run_dir, result.stdout, result.stderr
    )


def resume_cli(hint: str, *overrides: str, timeout: float = 300) -> Run:
    """Run the resume command a stopped run printed (``resume with: python -m ...``), as
    a user would paste it, with ``overrides`` added."""
    (command,) = [
        line.split("resume with: ", 1)[1] for line in hint.splitlines() if "resume with: " in line
    ]
    words = command.split()
    assert words[:3] == ["python", "-m", "scaletrain.train"], command
    run_dir = Path(words[3].removeprefix("resume="))
    result = subprocess.run(
        [sys.executable, *words[1:], *overrides],
        cwd=run_dir.parent,
        env=CLI_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(result.returncode, result.stdout + result.stderr, run_dir)


@dataclass
class Job:
    """A command started by :func:`start_cli`."""

    process: subprocess.Popen
    run_dir: Path
    output_file: Path

    @property
    def output(self) -> str:
        return self.output_file.read_text()

    def rank_pids(self) -> list[int]:
        """Rank 0's process id, then those of the ranks Lightning started as its children."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        return [pid, *(int(child) for child in children.read_text().split())]

    def wait_for(self, condition, what: str, timeout: float = 120, poll: float = 0.01) -> None:
        """Return once ``condition()`` holds; fail if the job ends first or ``timeout``
        seconds pass (saying ``what`` did not happen)."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, self.output
            assert time.monotonic() < deadline, what
            time.sleep(poll)

    def signal_all(self, signum: int) -> None:
        os.killpg(self.process.pid, signum)

    def wait_until_gone(self, timeout: float) -> None:
        """Wait until no process of the job is left (rank 0 and its children); on timeout
        every one of them is killed first."""
        self.wait(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            if time.monotonic() > deadline:
                self.signal_all(signal.SIGKILL)
                raise TimeoutError(f"processes of the job still running after {timeout} s")
            time.sleep(0.1)

    def wait(self, timeout: float) -> int:
        """The exit status; on timeout every process of the job is killed first."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal_all(signal.SIGKILL)
            raise


def start_cli(module: str, run_dir: Path, *overrides: str) -> Job:
    """Start :func:`run_cli`'s command without waiting, in a session of its own so that a
    test can signal every rank at once; its output goes to ``<run_dir>.out``."""
    output_file = run_dir.with_name(f"{run_dir.name}.out")
    with open(output_file, "w") as output:
        process = subprocess.Popen(
            cli_command(module, run_dir, *overrides),
            cwd=run_dir.parent,
            env=CLI_ENV,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Job(process, run_dir, output_file)


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
