"""Make Lightning's per-rank processes run the current Hydra job, never the whole sweep.

Lightning starts ranks 1..N-1 of a single-machine run by re-running the command line
(``_SubprocessScriptLauncher``). Under ``-m`` that command line is the whole sweep: each
extra rank would re-run every job in a directory of its own, and an Optuna sweep would
sample different parameters per rank. Here the extra ranks get exactly the current
job's overrides (the values the sweeper chose for it) and its output directory.

Hydra's basic launcher also runs the jobs of a sweep one after another in one process,
so each job must leave no process group or launcher environment behind for the next.
"""

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import lightning.pytorch.strategies.launchers.subprocess_script as subprocess_script
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd
from omegaconf import DictConfig

from scaletrain.utils.errors import lost_rank_exits
from scaletrain.utils.quiet import set_verbosity
from scaletrain.utils.record import RunRecord
from scaletrain.utils.signals import EXIT_STATUS, stop_on_signals

log = logging.getLogger("scaletrain")

# Set by Lightning's rank 0 for the ranks it starts: its process id.
LAUNCHER_PID = "SCALETRAIN_LAUNCHER_PID"
# What Lightning's launcher puts in os.environ for the ranks it starts (and the thread
# count it lowers for them), and the launcher's process id.
LAUNCHER_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "OMP_NUM_THREADS",
    LAUNCHER_PID,
)


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def job_overrides() -> list[str]:
    """The current job's own overrides: the command line's, or a sweeper's choice."""
    return list(HydraConfig.get().overrides.task)


def job_rank_command(module: str, local_rank: int) -> tuple[list[str], str]:
    """The command line and working directory of one more rank of the current job."""
    output_dir = HydraConfig.get().runtime.output_dir
    # Lightning sets NODE_RANK before starting the ranks of this node.
    node = int(os.environ.get("NODE_RANK", 0))
    task = HydraConfig.get().job.name
    # named like the logs of externally launched ranks (train.rank<N>.log); on node 0
    # the local rank is the global rank
    log_name = (
        f"{task}.rank{local_rank}.log" if node == 0 else f"{task}.node{node}.rank{local_rank}.log"
    )
    command = [sys.executable, "-m", module, *job_overrides()]
    command += [
        f'hydra.run.dir="{output_dir}"',
        # one run, even where the job came from a sweep config (hparams_search sets MULTIRUN)
        "hydra.mode=RUN",
        f'hydra.job_logging.handlers.file.filename="{output_dir}/{log_name}"',
    ]
    return command, get_original_cwd()


def launch_ranks_as_job(module: str) -> None:
    """Have Lightning start extra ranks with :func:`job_rank_command` for ``module``."""
    subprocess_script._hydra_subprocess_cmd = lambda local_rank: job_rank_command(
        module, local_rank
    )


@contextmanager
def isolated_job() -> Iterator[None]:
    """Run one job; afterwards destroy its process group and drop the launcher's
    environment variables, so that the next job of a sweep starts its ranks afresh
    (on a new port). Variables set before the job (torchrun, SLURM) are kept."""
    inherited = {key: os.environ[key] for key in LAUNCHER_ENV if key in os.environ}
    threads = torch.get_num_threads()
    if local_rank() == 0:  # the ranks Lightning starts from here know whom to watch
        os.environ[LAUNCHER_PID] = str(os.getpid())
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key in LAUNCHER_ENV:
            if key in inherited:
                os.environ[key] = inherited[key]
            else:
                os.environ.pop(key, None)


def wait_for_started_ranks(trainer: L.Trainer, timeout: float = 60.0) -> None:
    """On the rank that started the others (Lightning's rank 0 of a node): wait until they
    have exited, so that the next job of a sweep never starts while the last one's ranks
    are still shutting down, and report a rank that exited with an error."""
    for process in getattr(trainer.strategy.launcher, "procs", []):
        try:
            status = process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("rank process %d still running %.0f s after the job", process.pid, timeout)
            continue
        if status:
            log.error("rank process %d exited with status %d", process.pid, status)


@contextmanager
def exit_with_launcher(poll_seconds: float = 1.0) -> Iterator[None]:
    """In a rank of non-zero local rank, started by another process (Lightning's rank 0,
    torchrun's agent): exit as soon as that process is gone, rather than wait for it
    forever in a rendezvous or a collective."""
    if local_rank() == 0:
        yield
        return
    # Lightning's rank 0 says who it is (this process may start after it is gone already);
    # otherwise the launcher is the parent
    launcher = int(os.environ.pop(LAUNCHER_PID, os.getppid()))
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll_seconds):
            if os.getppid() != launcher:
                log.error("error: the process that started this rank (%d) is gone", launcher)
                logging.shutdown()
                os._exit(1)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


def started_by_lightning() -> bool:
    """Whether Lightning's rank 0 started this process as one of its ranks."""
    return local_rank() > 0 and LAUNCHER_PID in os.environ


@contextmanager
def rank_job(module: str, cfg: DictConfig, resume_hint: str | None = None) -> Iterator[RunRecord]:
    """Run one job of ``module`` (a Hydra main) on this rank, yielding its run record.

    Lightning starts the other ranks with this job's overrides; the job leaves nothing
    behind for the next one; a rank started by another process exits once that one is
    gone; SIGTERM and SIGINT end it promptly; losing a rank is a one-line error; and a
    job that fails before its record is written removes the run directory it created.
    """
    set_verbosity(bool(cfg.get("verbose", False)))
    record = RunRecord(Path(HydraConfig.get().runtime.output_dir))
    # Ranks Lightning started exit with 0 on a signal: see scaletrain.utils.signals.
    exit_status = 0 if started_by_lightning() else EXIT_STATUS
    launch_ranks_as_job(module)
    with (
        isolated_job(),
        exit_with_launcher(),
        stop_on_signals(exit_status),
        lost_rank_exits(resume_hint),
    ):
        try:
            yield record
        except BaseException:
            record.discard()
            raise
