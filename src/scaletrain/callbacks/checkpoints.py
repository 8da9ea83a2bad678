"""Checkpoint callbacks: ``checkpoints/last.ckpt``, always the latest training state, and
the best checkpoint by the monitored metric.

Lightning's ``ModelCheckpoint(save_last=True)`` rewrites last.ckpt only when it also
saves a top-k checkpoint (Lightning 2.6): once the monitored metric stops improving,
last.ckpt stays at the best epoch, and a resume from it repeats every epoch since. Here
the latest state has a callback of its own, independent of any metric: last.ckpt is
written after every validation, at the end of every epoch, every ``every_n_train_steps``
optimizer steps where asked, and when training ends; the preemption stop saves through
it too. The best checkpoint stays with ``ModelCheckpoint``.

It is a ``Checkpoint`` callback, so Lightning runs it after the other callbacks of each
hook, and the state it saves holds the best-checkpoint callback's score of that very
validation.
"""

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from scaletrain import compat
from scaletrain.checkpoint.contents import LAST

log = logging.getLogger("scaletrain")


class LatestCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt`` whenever training has moved on since the last write.

    Args:
        dirpath: the run's checkpoint directory.
        every_n_train_steps: also write every this many optimizer steps (None: only at
            validations, epoch ends and the end of training).
    """

    def __init__(self, dirpath: str, every_n_train_steps: int | None = None) -> None:
        if every_n_train_steps is not None and every_n_train_steps < 1:
            raise ValueError(
                f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps}: "
                "must be a positive integer, or null"
            )
        self.path = Path(dirpath) / LAST
        self.every_n_train_steps = every_n_train_steps
        self.saved_step: int | None = None

    def save(self, trainer: L.Trainer) -> Path:
        """Write the current state now (every rank calls this: sharded saves are collective)."""
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, to resume
        self.saved_step = trainer.global_step
        return self.path

    def _save_if_new(self, trainer: L.Trainer) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        moved_on = trainer.global_step not in (0, self.saved_step)
        if fitting and moved_on and not trainer.sanity_checking and not trainer.fast_dev_run:
            self.save(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resume starts from what is already on disk
        self.saved_step = trainer.global_step if trainer.ckpt_path else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.every_n_train_steps
        if every and trainer.global_step % every == 0:
            self._save_if_new(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation at the end of the epoch is followed by on_train_epoch_end, where
        # ModelCheckpoint records that validation's best score first: save there.
        if not compat.at_last_batch_of_epoch(trainer):
            self._save_if_new(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_new(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_if_new(trainer)


def latest_checkpoint(trainer: L.Trainer) -> LatestCheckpoint | None:
    """The run's :class:`LatestCheckpoint` callback, if it has one."""
    for callback in trainer.callbacks:
        if isinstance(callback, LatestCheckpoint):
            return callback
    return None


def best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The callback that keeps the best checkpoint by the monitored metric, if any."""
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            return callback
    return None


def checkpoint_order(callbacks: list[Callback]) -> list[Callback]:
    """``callbacks`` with :class:`LatestCheckpoint` last: it must save after the best
    checkpoint's callback has recorded the same validation."""
    return sorted(callbacks, key=lambda callback: isinstance(callback, LatestCheckpoint))
