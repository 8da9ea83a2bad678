"""Per-rank memory of the model state: parameters, gradients and optimizer state, and
what building the model cost each rank before training started.

This is the memory that DDP replicates on every rank and that FSDP and tensor
parallelism divide: sharded tensors count only the shard this rank holds.
"""

import logging
from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.distributed.tensor import DTensor

from scaletrain.parallel.pipeline_strategy import whole_net_size
from scaletrain.runtime.memory import baseline_bytes, peak_resident_bytes
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


def log_now(trainer: L.Trainer, metrics: dict[str, float]) -> None:
    """Straight to the loggers (rank 0's call): a one-off value must not wait for a
    log_every_n_steps boundary."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)


class ModelStateMemory(Callback):
    """Logs, once training starts, ``perf/params_full_bytes`` (the whole model's
    parameters) and each rank's ``perf/baseline_memory_bytes/rank<N>`` (resident memory
    after imports, before the model was built) and ``perf/setup_peak_memory_bytes/rank<N>``
    (the peak above that baseline until the first step: building, sharding and
    initializing the model); then ``perf/<part>_bytes`` once, after the first optimizer
    step (when gradients and optimizer state exist). Each rank's figures go to the log."""

    def __init__(self) -> None:
        self.measured = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        baseline = baseline_bytes()
        if baseline is None or pl_module.device.type != "cpu":
            return  # resident memory says little of a GPU run's model
        setup_peak = peak_resident_bytes() - baseline
        log.info(
            "rank %d memory: %.1f MiB after imports, setup peak %.1f MiB above it",
            trainer.global_rank,
            baseline / 2**20,
            setup_peak / 2**20,
            extra=FILE_ONLY,
        )
        gathered = pl_module.all_gather(torch.tensor([float(baseline), float(setup_peak)]))
        metrics = {"perf/params_full_bytes": float(whole_net_size(trainer)[1])}
        for rank, (rank_baseline, rank_peak) in enumerate(gathered.reshape(-1, 2).tolist()):
            metrics[f"perf/baseline_memory_bytes/rank{rank}"] = rank_baseline
            metrics[f"perf/setup_peak_memory_bytes/rank{rank}"] = rank_peak
        log_now(trainer, metrics)

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
        log_now(trainer, {f"perf/{name}_bytes": float(size) for name, size in sizes.items()})
