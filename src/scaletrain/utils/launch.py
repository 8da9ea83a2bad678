"""Make Lightning's per-rank processes run the current Hydra job, never the whole sweep.

Lightning starts ranks 1..N-1 of a single-machine run by re-running the command line
(``_SubprocessScriptLauncher``). Under ``-m`` that command line is the whole sweep: each
extra rank would re-run every job in a directory of its own, and an Optuna sweep would
sample different parameters per rank. Here the extra ranks get exactly the current
job's overrides (the values the sweeper chose for it) and its output directory.

Hydra's basic launcher also runs the jobs of a sweep one after another in one process,
so each job must leave no process group or launcher environment behind for the next.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import lightning.pytorch.strategies.launchers.subprocess_script as subprocess_script
import torch
import torch.distributed as dist
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_original_cwd

# What Lightning's launcher puts in os.environ for the ranks it starts (and the thread
# count it lowers for them).
LAUNCHER_ENV = (
    "MASTER_ADDR",
    "MASTER_PORT",
    "NODE_RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "OMP_NUM_THREADS",
)


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
        # rank 0 already saved the job's config; each rank keeps a log of its own
        "hydra.output_subdir=null",
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
