"""Per-rank memory of the model state: parameters, gradients and optimizer state.

This is the memory that DDP replicates on every rank and that FSDP and tensor
parallelism divide: sharded tensors count only the shard this rank holds.
"""

import logging
from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.distributed.tensor import DTensor

from scaletrain.runtime.quiet import FILE_ONLY

log = logging.getLogger("scaletrain")


def local_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of these tensors held by this rank (a DTensor counts its local shard)."""
    total = 0
    for tensor in tensors:
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        total += local.numel() * local.element_size()
    return total


def model_state_bytes(module: torch.nn.Module, optimizers: list) -> dict[str, int]:
    """This rank's bytes of parameters, gradients and optimizer state."""
    params = list(module.parameters())
    states = [
        value
        for optimizer in optimizers
        for state in optimizer.state.values()
        for value in state.values()
        if isinstance(value, torch.Tensor)
    ]
    sizes = {
        "params": local_bytes(params),
        "grads": local_bytes(p.grad for p in params if p.grad is not None),
        "optimizer_state": local_bytes(states),
    }
    sizes["model_state"] = sum(sizes.values())
    return sizes


class ModelStateMemory(Callback):
    """Logs ``perf/<part>_bytes`` once, after the first optimizer step (when gradients and
    optimizer state exist), and writes each rank's figures to the log."""

    def __init__(self) -> None:
        self.measured = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args) -> None:
        if self.measured or not any(optimizer.state for optimizer in trainer.optimizers):
            return
        self.measured = True
        sizes = model_state_bytes(pl_module, trainer.optimizers)
        log.info(
            "rank %d model state: %s",
            trainer.global_rank,
            ", ".join(f"{name} {size / 2**20:.2f} MiB" for name, size in sizes.items()),
            extra=FILE_ONLY,
        )
        # Straight to the loggers (rank 0's figures): a one-off value must not wait for
        # a log_every_n_steps boundary.
        metrics = {f"perf/{name}_bytes": float(size) for name, size in sizes.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
