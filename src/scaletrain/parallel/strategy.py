"""The ``strategy`` config group, turned into what Lightning's Trainer accepts.

- ``auto``: one process.
- ``ddp``: Lightning's DDP; every rank holds the whole model and averages gradients.
- ``fsdp``: FSDP2 through Lightning's ModelParallelStrategy; parameters, gradients and
  optimizer state sharded over all ranks; distributed checkpoints.
- ``model_sharded``: tensor parallel inside groups of ``tensor_parallel_size`` ranks,
  combined with FSDP2 across those groups (a 2-D device mesh).
"""

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy, Strategy
from omegaconf import DictConfig, ListConfig

from scaletrain.parallel.apply import FSDPOptions
from scaletrain.utils.atomic import remove, replace_path, scratch_path
from scaletrain.utils.errors import ConfigError

STRATEGIES = ("auto", "ddp", "fsdp", "model_sharded")
SHARDED = ("fsdp", "model_sharded")


def accelerator_type(trainer_cfg: DictConfig) -> str:
    """``cpu`` or ``gpu``: what ``trainer.accelerator`` (``auto`` included) resolves to."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("auto", "cuda", "gpu"):
        return "gpu" if torch.cuda.is_available() or accelerator != "auto" else "cpu"
    return accelerator


def world_size(trainer_cfg: DictConfig) -> int | None:
    """Processes the Trainer will run: ``trainer.devices`` (resolved as Lightning does for
    ``auto`` and -1) times ``trainer.num_nodes``; None for a form it cannot tell."""
    devices = trainer_cfg.get("devices")
    if devices in ("auto", -1, "-1"):
        per_node = torch.cuda.device_count() if accelerator_type(trainer_cfg) == "gpu" else 1
    elif isinstance(devices, int) and devices > 0:
        per_node = devices
    elif isinstance(devices, ListConfig | list):
        per_node = len(devices)
    else:
        return None
    return per_node * int(trainer_cfg.get("num_nodes", 1))


def tensor_parallel_size(cfg: DictConfig) -> int:
    """The tensor-parallel degree of a strategy config (1 for all but model_sharded)."""
    return int(cfg.get("tensor_parallel_size", 1))


def data_parallel_size(cfg: DictConfig, world: int) -> int:
    """How many model replicas (or FSDP shards) the world holds."""
    return world // tensor_parallel_size(cfg)


def data_parallel_layout(strategy: Strategy | None) -> tuple[int, int]:
    """``(size, rank)`` of the running strategy's data-parallel dimension: (1, 0) for one
    process; ranks of one tensor-parallel group share a data-parallel rank."""
    kwargs = getattr(strategy, "distributed_sampler_kwargs", None) if strategy else None
    if not kwargs:
        return 1, 0
    return kwargs["num_replicas"], kwargs["rank"]


class ShardedStrategy(ModelParallelStrategy):
    """Lightning's ModelParallelStrategy whose distributed checkpoints replace the previous
    version of a path atomically: all ranks write their shards into a scratch directory,
    then rank 0 swaps it into place (see :mod:`scaletrain.utils.atomic`)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None
    ) -> None:
        path = Path(self.broadcast(filepath))
        if not self._save_distributed_checkpoint:
            # one full file, written by rank 0 through the atomic CheckpointIO (the parent
            # class would delete a sharded checkpoint at ``path`` before writing it)
            return Strategy.save_checkpoint(self, checkpoint, path, storage_options)
        scratch = scratch_path(path)
        if self.global_rank == 0:
            remove(scratch)  # left by a save that was killed
        self.barrier("scratch directory cleared")
        super().save_checkpoint(checkpoint, scratch, storage_options)
        self.barrier("every shard written")
        if self.global_rank == 0:
            replace_path(scratch, path)
        self.barrier("checkpoint in place")


def build_strategy(cfg: DictConfig, world: int) -> tuple[str | Strategy, FSDPOptions | None]:
    """The Lightning strategy for ``cfg`` (the strategy group) and, for the sharded ones,
    the FSDP2 options the LightningModule applies in ``configure_model``."""
    if cfg.name not in STRATEGIES:
        raise ConfigError(f"strategy.name={cfg.name}: unknown; valid: {', '.join(STRATEGIES)}")
    if cfg.name == "auto":
        return "auto", None
    if cfg.name == "ddp":
        return DDPStrategy(find_unused_parameters=cfg.find_unused_parameters), None
    tp = tensor_parallel_size(cfg)
    strategy = ShardedStrategy(
        data_parallel_size=data_parallel_size(cfg, world),
        tensor_parallel_size=tp,
        save_distributed_checkpoint=cfg.distributed_checkpoint,
    )
    fsdp = FSDPOptions(
        reshard_after_forward=cfg.reshard_after_forward,
        param_dtype=cfg.mixed_precision,
        cpu_offload=cfg.cpu_offload,
    )
    return strategy, fsdp
