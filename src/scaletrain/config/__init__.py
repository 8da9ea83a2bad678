"""Where the Hydra configs live (``conf/`` at the repository root), and the resolvers
they use: log files of their own for externally launched ranks (torchrun, srun), the
run's name in TensorBoard, the GPUs a SLURM job asks for, and the vocabulary of prepared
token data."""

import os
from pathlib import Path

from omegaconf import OmegaConf

from scaletrain.data.shards import manifest_vocab_size
from scaletrain.runtime.ranks import rank_log_name

# Overridable for installs outside the repository checkout.
CONFIG_DIR = os.environ.get(
    "SCALETRAIN_CONFIG_DIR", str(Path(__file__).resolve().parents[3] / "conf")
)


def tensorboard_run_name() -> str:
    """The run's name in TensorBoard (see :mod:`scaletrain.reporting.tensorboard`)."""
    from scaletrain.reporting.tensorboard import run_name  # imported late: it needs the job

    return run_name()


GPU_ACCELERATORS = ("gpu", "cuda")


def gpus_per_node(accelerator: str, devices: object) -> object:
    """The GPUs a SLURM job asks for on each node: one per device where the run trains on
    GPUs (``trainer=gpu``), none otherwise (``trainer=cpu``; ``auto`` asks for none, so
    that it runs on a CPU partition)."""
    return devices if str(accelerator) in GPU_ACCELERATORS else 0


OmegaConf.register_new_resolver("manifest_vocab_size", manifest_vocab_size, replace=True)
OmegaConf.register_new_resolver("gpus_per_node", gpus_per_node, replace=True)
OmegaConf.register_new_resolver("rank_log_name", rank_log_name, replace=True)
OmegaConf.register_new_resolver("tensorboard_run_name", tensorboard_run_name, replace=True)
