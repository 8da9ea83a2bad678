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
from datetime import timedelta

import lightning as L
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd

from scaletrain import compat
from scaletrain.runtime import signals
from scaletrain.runtime.quiet import set_verbosity
from scaletrain.runtime.ranks import elastic_restarts, local_rank, node_rank, rank_log_name

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


def job_overrides() -> list[str]:
    """The current job's own overrides: the command line's, or a sweeper's choice."""
    return list(HydraConfig.get().overrides.task)


def job_rank_command(module: str, local_rank: int) -> tuple[list[str], str]:
    """The command line and working directory of one more rank of the current job."""
    output_dir = HydraConfig.get().runtime.output_dir
    # Lightning sets NODE_RANK before starting the ranks of this node; on node 0 the
    # local rank is the global rank
    log_name = rank_log_name(HydraConfig.get().job.name, rank=local_rank, node=node_rank())
    command = [sys.executable, "-m", module, *job_overrides()]
    # the user's config folders, where the job's configs may come from
    command += [o for o in HydraConfig.get().overrides.hydra if o.startswith("hydra.searchpath=")]
    command += [
        f'hydra.run.dir="{output_dir}"',
        # one run, even where the job came from a sweep config (hparams_search sets MULTIRUN)
        "hydra.mode=RUN",
        f'hydra.job_logging.handlers.file.filename="{output_dir}/{log_name}"',
    ]
    return command, get_original_cwd()


def launch_ranks_as_job(module: str) -> None:
    """Have Lightning start extra ranks with :func:`job_rank_command` for ``module``."""
    compat.set_rank_command(lambda local_rank: job_rank_command(module, local_rank))


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
    for process in compat.started_rank_processes(trainer):
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
    forever in a rendezvous or a collective.

    A thread polls the parent's id: portable, and it logs why the rank ends. Linux's
    ``prctl(PR_SET_PDEATHSIG)`` would act without polling, but it fires when the *thread*
    that started the process ends, and it kills without a word in the rank's log."""
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


# How gloo and NCCL report a peer process that is gone. gloo raises a plain RuntimeError
# (not torch.distributed.DistNetworkError, checked with torch 2.13), so the text decides.
LOST_PEER_MESSAGES = ("Connection reset by peer", "Connection closed by peer", "remote process")


def lost_rank(error: BaseException) -> bool:
    """Whether ``error`` says that another rank of the job has gone away."""
    return isinstance(error, RuntimeError) and any(m in str(error) for m in LOST_PEER_MESSAGES)


@contextmanager
def lost_rank_exits(resume_hint: str | None) -> Iterator[None]:
    """Turn the error of a collective whose peer is gone into one line and exit 1 (or,
    where this rank was signalled too, into the signal's stop)."""
    try:
        yield
    except RuntimeError as error:
        if not lost_rank(error):
            raise
        log.debug("lost contact with another rank", exc_info=error)
        stop = signals.current()
        if stop is not None and stop.received is not None:
            # the other ranks stopped for the same signal, before this one
            log.info("stopped by a signal while another rank was stopping: nothing saved")
            sys.exit(stop.exit_status)
        (reason, *_) = str(error).strip().splitlines()
        log.error(
            "error: lost contact with another rank of this job (killed, crashed or cut off): %s",
            reason,
        )
        restarts_left = int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", 0)) - elastic_restarts()
        if restarts_left > 0:
            log.info(
                "torchrun's agent restarts the workers (%d restart(s) left): they resume from "
                "the last complete checkpoint",
                restarts_left,
            )
        elif resume_hint:
            log.info("checkpoints saved so far are intact; resume with: %s", resume_hint)
        sys.exit(1)


@contextmanager
def job_processes(module: str, verbose: bool, resume_hint: str | None = None) -> Iterator[None]:
    """Run one job of ``module`` (a Hydra main) on this rank.

    Lightning starts the other ranks with this job's overrides; the job leaves nothing
    behind for the next one; a rank started by another process exits once that one is
    gone; SIGTERM and SIGINT end it promptly; losing a rank is a one-line error.
    """
    set_verbosity(verbose)
    # Ranks Lightning started exit with 0 on a signal: see scaletrain.runtime.signals.
    exit_status = 0 if started_by_lightning() else signals.EXIT_STATUS
    launch_ranks_as_job(module)
    with (
        isolated_job(),
        exit_with_launcher(),
        signals.stop_on_signals(exit_status),
        lost_rank_exits(resume_hint),
    ):
        yield


def meet_in_a_fresh_store() -> None:
    """Form the process group of workers that torchrun's elastic agent restarted.

    They meet in the agent's store, which still holds the keys the attempt before them
    wrote: a worker that reads its peer's address from there before the peer has written
    its new one connects to a process that is gone ("Connection refused"; torch's own
    issue #167288, open). Here each attempt keeps to keys of its own (a prefix naming
    it); Lightning then finds the group formed and uses it. Nothing changes for a first
    attempt, nor where the workers host a store of their own."""
    restarts = elastic_restarts()
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True)
    if not restarts or not shared or dist.is_initialized():
        return
    agent_store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(minutes=30),  # Lightning's default for forming the group
    )
    dist.init_process_group(
        "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo",
        store=dist.PrefixStore(f"scaletrain/attempt-{restarts}", agent_store),
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
    )
