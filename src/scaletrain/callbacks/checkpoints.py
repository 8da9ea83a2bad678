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
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from scaletrain import compat
from scaletrain.checkpoint.contents import LAST

log = logging.getLogger("scaletrain")


def ends_epoch(trainer: L.Trainer) -> bool:
    """Whether the training batch just run ends its epoch, or the training. A state saved
    there would not be whole: Lightning resumes from it by skipping the epoch's validation,
    and this step's logged metrics reach ``trainer.callback_metrics`` only after the
    callbacks' ``on_train_batch_end``. The save at the epoch's end comes after both."""
    last_step = trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step
    return last_step or compat.at_last_batch_of_epoch(trainer)


class LatestCheckpoint(Checkpoint):
    """Writes ``<dirpath>/last.ckpt`` whenever training has moved on since the last write:
    a step further, or a validation more (whose best score and metrics the state holds).

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
        self.validations = 0  # validations run during this fit
        self.saved: tuple[int, int] | None = None  # (step, validations) last written
        # the metrics logged last before the state this run resumed from
        self.restored_metrics: dict[str, float] = {}
        self._trainer: L.Trainer | None = None

    def state_dict(self) -> dict[str, Any]:
        """The metrics logged so far (the last validation's among them): a resume that
        ends before validating again still reports them, as the uninterrupted run does."""
        metrics = self._trainer.callback_metrics if self._trainer is not None else {}
        return {"metrics": {name: float(value) for name, value in metrics.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restored_metrics = dict(state_dict.get("metrics", {}))

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # every checkpoint the Trainer writes, the best ones too, resumes where it was written
        whole_epoch = compat.batches_trained_this_epoch(trainer) >= trainer.num_training_batches
        compat.store_epoch_end_as_resumable(checkpoint, whole_epoch)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def save(self, trainer: L.Trainer) -> Path:
        """Write the current state now (every rank calls this: sharded saves are collective)."""
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, to resume
        self.saved = (trainer.global_step, self.validations)
        return self.path

    @property
    def saved_step(self) -> int | None:
        return self.saved[0] if self.saved is not None else None

    def save_if_new(self, trainer: L.Trainer) -> Path:
        """Write the current state unless last.ckpt holds it already."""
        if (trainer.global_step, self.validations) != self.saved:
            self.save(trainer)
        return self.path

    def _save_if_new(self, trainer: L.Trainer) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING
        moved_on = (
            trainer.global_step != 0 and (trainer.global_step, self.validations) != self.saved
        )
        if fitting and moved_on and not trainer.sanity_checking and not trainer.fast_dev_run:
            self.save(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a resume starts from what is already on disk
        self.validations = 0
        self.saved = (trainer.global_step, 0) if trainer.ckpt_path else None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        every = self.every_n_train_steps
        if every and trainer.global_step % every == 0 and not ends_epoch(trainer):
            self._save_if_new(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # A validation at the end of the epoch is followed by on_train_epoch_end, where
        # ModelCheckpoint records that validation's best score first: save there.
        if trainer.sanity_checking:
            return
        self.validations += 1
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


def metrics_since_start(trainer: L.Trainer) -> dict[str, Any]:
    """The metrics logged last in this run, those of its earlier attempts included."""
    latest = latest_checkpoint(trainer)
    restored = latest.restored_metrics if latest is not None else {}
    return {**restored, **trainer.callback_metrics}


def best_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The callback that keeps the best checkpoint by the monitored metric, if any."""
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint):
            return callback
    return None


def checkpoint_order(callbacks: list[Callback]) -> list[Callback]:
    """``callbacks`` with :class:`LatestCheckpoint` after the other checkpoint callbacks (it
    must save after the best checkpoint's callback has recorded the same validation), and
    the preemption stop after it (it stops the run once everything is saved)."""
    from scaletrain.callbacks.preemption import CheckpointOnPreemption  # it imports this module

    def rank(callback: Callback) -> int:
        return (
            2
            if isinstance(callback, CheckpointOnPreemption)
            else int(isinstance(callback, LatestCheckpoint))
        )

    return sorted(callbacks, key=rank)
