"""Which rank this process is, as its launcher (Lightning, torchrun, srun) set it, before
any process group exists; and the log file each rank writes."""

import os
from typing import Any


def local_rank() -> int:
    """This process's rank on its machine (0 when started by hand)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def node_rank() -> int:
    """This machine's rank in the job (Lightning and SLURM say NODE_RANK, torchrun GROUP_RANK)."""
    return int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))


def launcher_rank() -> int:
    """This process's global rank as torchrun or srun set it (0 when started by hand, and
    in ranks Lightning starts, which learn theirs later)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def elastic_restarts() -> int:
    """How often torchrun's elastic agent has restarted this job's workers (0 at first)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))


def is_global_rank_zero() -> bool:
    """Whether this process is rank 0 of the whole job, before the Trainer knows it: not
    a rank started by torchrun or srun, nor one Lightning starts, nor rank 0 of a node
    other than the first."""
    return launcher_rank() == 0 and node_rank() == 0 and local_rank() == 0


def rank_log_name(task_name: str, rank: int | None = None, node: int = 0) -> str:
    """``train.log`` for rank 0, ``train.rank<N>.log`` for the others (by default this
    process's launcher rank); ranks of another node that know only their local rank
    ``train.node<M>.rank<N>.log``."""
    rank = launcher_rank() if rank is None else rank
    if rank == 0 and node == 0:
        return f"{task_name}.log"
    return f"{task_name}.rank{rank}.log" if node == 0 else f"{task_name}.node{node}.rank{rank}.log"


def logs_this_step(trainer: Any) -> bool:
    """Whether Lightning writes this training step's metrics to the loggers."""
    every = trainer.log_every_n_steps
    return bool(trainer.fast_dev_run) or (every > 0 and (trainer.global_step + 1) % every == 0)
