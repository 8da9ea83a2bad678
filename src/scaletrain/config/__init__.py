"""Where the Hydra configs live (``conf/`` at the repository root), and the resolvers
they use: log files of their own for externally launched ranks (torchrun, srun), and the
run's name in TensorBoard."""

import os
from pathlib import Path

from omegaconf import OmegaConf

from scaletrain.runtime.ranks import rank_log_name

# Overridable for installs outside the repository checkout.
CONFIG_DIR = os.environ.get(
    "SCALETRAIN_CONFIG_DIR", str(Path(__file__).resolve().parents[3] / "conf")
)


def tensorboard_run_name() -> str:
    """The run's name in TensorBoard (see :mod:`scaletrain.reporting.tensorboard`)."""
    from scaletrain.reporting.tensorboard import run_name  # imported late: it needs the job

    return run_name()


OmegaConf.register_new_resolver("rank_log_name", rank_log_name, replace=True)
OmegaConf.register_new_resolver("tensorboard_run_name", tensorboard_run_name, replace=True)
