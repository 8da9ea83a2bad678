"""Where the Hydra configs live (``conf/`` at the repository root), and the resolvers
they use: log files of their own for externally launched ranks (torchrun, srun), and the
run's name in TensorBoard."""

import os
from pathlib import Path

from omegaconf import OmegaConf

# Overridable for installs outside the repository checkout.
CONFIG_DIR = os.environ.get(
    "SCALETRAIN_CONFIG_DIR", str(Path(__file__).resolve().parents[2] / "conf")
)


def launcher_rank() -> int:
    """This process's global rank as torchrun or srun set it (0 when started by hand)."""
    return int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0)))


def rank_log_name(task_name: str) -> str:
    """``train.log`` for rank 0, ``train.rank<N>.log`` for the others."""
    rank = launcher_rank()
    return f"{task_name}.log" if rank == 0 else f"{task_name}.rank{rank}.log"


def is_global_rank_zero() -> bool:
    """Whether this process is rank 0 of the whole job, before the Trainer knows it: not
    a rank started by torchrun or srun, nor one Lightning starts, nor rank 0 of a node
    other than the first."""
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", 0)))
    return launcher_rank() == 0 and node == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def tensorboard_run_name() -> str:
    """The run's name in TensorBoard (see :mod:`scaletrain.utils.tensorboard`)."""
    from scaletrain.utils.tensorboard import run_name  # imported late: it needs the job

    return run_name()


OmegaConf.register_new_resolver("rank_log_name", rank_log_name, replace=True)
OmegaConf.register_new_resolver("tensorboard_run_name", tensorboard_run_name, replace=True)
