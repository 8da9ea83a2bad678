"""Helpers the tests share: run the real command-line entry points in a subprocess, compose
configs, read what a run wrote."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaletrain.checkpoint.consolidate import consolidate, is_sharded_checkpoint
from scaletrain.config import CONFIG_DIR
from scaletrain.reporting.tensorboard import event_dir

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


def compose_config(name: str, *overrides: str):
    """The composed ``name`` config (train or eval), as the command line would build it,
    without running it."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(name, overrides=["paths.output_dir=/tmp/unused", *overrides])


def compose_train(*overrides: str):
    """The composed train config, as the command line would build it, without running it."""
    return compose_config("train", *overrides)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- parity: the same training on one process and under each strategy ---------------------

PARITY_STEPS = 6
TOLERANCE = 1e-5  # every strategy equals single-process training within this
PARITY_COMMON = [
    f"trainer.max_steps={PARITY_STEPS}",
    f"trainer.val_check_interval={PARITY_STEPS}",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "test=false",
]
PARITY_MODELS = {
    "mlp": ["data.batch_size=32"],
    "gpt": [
        "experiment=gpt_text",
        "data.max_bytes=200000",
        "data.context_length=32",
        "data.batch_size=8",
        "model.net.dim=32",
        "model.net.num_layers=2",
    ],
}
PARITY_STRATEGIES = {
    "ddp": ["strategy=ddp", "trainer.devices=2"],
    "fsdp": ["strategy=fsdp", "trainer.devices=2"],
    "model_sharded": [
        "strategy=model_sharded",
        "strategy.tensor_parallel_size=2",
        "trainer.devices=2",
    ],
}


def parity_run(root, name, *overrides, here: bool = False):
    """A parity run as a command line, or (``here``, one process only) in this process."""
    run = (run_here if here else run_cli)(
        "train", root / name, f"paths.root_dir={root}", *PARITY_COMMON, *overrides
    )
    assert run.returncode == 0, run.output
    return run


def final_weights(run) -> dict[str, torch.Tensor]:
    last = run.run_dir / "checkpoints" / "last.ckpt"
    if is_sharded_checkpoint(last):
        last = consolidate(last, run.run_dir / "full.ckpt")
    return torch.load(last, weights_only=False)["state_dict"]


def assert_same_training(run, reference) -> None:
    """Every step's loss and the final weights within the tolerance of ``reference``'s."""
    losses, reference_losses = step_losses(run), step_losses(reference)
    assert len(losses) == len(reference_losses) == PARITY_STEPS
    for step, (loss, expected) in enumerate(zip(losses, reference_losses, strict=True)):
        assert abs(loss - expected) <= TOLERANCE, f"step {step}: {loss} vs {expected}"
    weights, reference_weights = final_weights(run), final_weights(reference)
    assert weights.keys() == reference_weights.keys()  # every stage's, by their own names
    for name, expected in reference_weights.items():
        difference = (weights[name] - expected).abs().max().item()
        assert difference <= TOLERANCE, f"{name}: max difference {difference}"
    # training moved the loss far more than the tolerance: the comparison is not vacuous
    assert abs(reference_losses[0] - reference_losses[-1]) > 1000 * TOLERANCE


def scalars(run, tag: str) -> list[float]:
    events = EventAccumulator(str(event_dir(run.run_dir)))
    events.Reload()
    return [event.value for event in events.Scalars(tag)]


def step_losses(run) -> list[float]:
    return scalars(run, "train/loss")


# -- in process: the entry points' own flow, without a new interpreter ---------------------


def run_in_process(run_dir: Path, *overrides: str, task: str = "train") -> object:
    """Run ``scaletrain.<task>`` (train or eval) on ``overrides`` inside this process, as
    Hydra's own run would, into ``run_dir``; returns what the task returns. Seconds
    faster than a subprocess, which pays for importing torch and Lightning afresh. One
    thread, as the subprocesses run (``OMP_NUM_THREADS=1``), so results compare exactly."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from scaletrain import eval as eval_task
    from scaletrain import train as train_task
    from scaletrain.cli import runner

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(task, overrides=[*QUIET, *overrides], return_hydra_config=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.job.name = task
        cfg.hydra.mode = "RUN"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    work = train_task.train if task == "train" else eval_task.evaluate
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return runner.run_job(f"scaletrain.{task}", cfg, lambda record: work(cfg, record))
    finally:
        torch.set_num_threads(threads)


def run_here(task: str, run_dir: Path, *overrides: str) -> Run:
    """:func:`run_in_process`, as a :class:`Run` like :func:`run_cli`'s (no output kept)."""
    try:
        run_in_process(run_dir, *overrides, task=task)
    except SystemExit as stop:
        return Run(stop.code if isinstance(stop.code, int) else 1, "", run_dir)
    return Run(0, "", run_dir)
