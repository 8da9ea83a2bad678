"""Where the Hydra configs live (``conf/`` at the repository root), and the resolvers
they use to keep externally launched ranks (torchrun, srun) out of each other's files."""

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


def rank_zero_only(value: str) -> str | None:
    """``value`` on rank 0, None elsewhere: one rank writes the run's .hydra/ files."""
    return value if launcher_rank() == 0 else None


OmegaConf.register_new_resolver("rank_log_name", rank_log_name, replace=True)
OmegaConf.register_new_resolver("rank_zero_only", rank_zero_only, replace=True)
