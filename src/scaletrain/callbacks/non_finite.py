"""Stop (or skip the step) when the loss or the gradients stop being finite numbers.

The check runs after backward, when every rank holds its synchronized gradients, and
all ranks agree on the verdict (one tiny all-reduce), so they stop or skip together
instead of leaving the others waiting. Nothing is saved after a bad step: the last
checkpoint written before it stays the last good one.
"""

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.distributed.tensor import DTensor

from scaletrain.errors import ConfigError

log = logging.getLogger("scaletrain")
ACTIONS = ("stop", "skip")


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss or gradient."""


def local_gradients_finite(module: torch.nn.Module) -> bool:
    """Whether every gradient this rank holds (its shard, for sharded ones) is finite."""
    grads = [
        p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad
        for p in module.parameters()
        if p.grad is not None
    ]
    if not grads:
        return True
    # the norm of every gradient, fused into few kernels; inf or nan if any value is
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, foreach=True)))


class NonFiniteGuard(Callback):
    """``action=stop``: end the run with an error naming the step. ``action=skip``: drop
    the step's gradients (the optimizer then leaves every parameter as it was)."""

    def __init__(self, action: str = "stop") -> None:
        if action not in ACTIONS:
            raise ConfigError(
                f"callbacks.non_finite_guard.action={action}: valid: {', '.join(ACTIONS)}"
            )
        self.action = action
        self.skipped = 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module, optimizer) -> None:
        bad = not local_gradients_finite(pl_module)
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):  # any rank
            return
        where = f"step {trainer.global_step} (epoch {trainer.current_epoch})"
        if self.action == "stop":
            raise NonFiniteLoss(
                f"non-finite loss or gradients at {where}; the last checkpoint before it is "
                "intact (callbacks.non_finite_guard.action=skip skips such steps)"
            )
        self.skipped += 1
        optimizer.zero_grad(set_to_none=True)
        log.warning("skipped %s: non-finite loss or gradients (%d so far)", where, self.skipped)
