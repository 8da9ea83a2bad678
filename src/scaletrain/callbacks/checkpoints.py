"""Checkpoint callbacks: ``checkpoints/last.ckpt``, always the latest training state, and
the best checkpoint by the monitored metric.

Lightning's ``ModelCheckpoint(save_last=True)`` rewrites last.ckpt only when it also
saves a top-k checkpoint (Lightning 2.6): once the monitored metric stops improving,
last.ckpt stays at the best epoch, and a resume from it repeats every epoch since. Here
the latest state has a callback of its own, independent of any metric: last.ckpt is
written after every validation, at the end of every epoch, every ``every_n_train_steps``
optimizer steps and every ``every_n_minutes`` where asked, and when training ends; the
preemption stop saves through it too. Where ``keep_last`` is set, the last that many of
these saves are also kept as ``step-<step>.ckpt`` (hard links to the files of
last.ckpt: no second write), older ones removed once the new one is in place. The best
checkpoint stays with ``ModelCheckpoint``.

It is a ``Checkpoint`` callback, so Lightning runs it after the other callbacks of each
hook, and the state it saves holds the best-checkpoint callback's score of that very
validation.
"""

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn

from scaletrain import compat
from scaletrain.checkpoint.atomic import InBackground, keep_copy, remove
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
        every_n_minutes: also write once this many minutes have passed since the last
            write, by rank 0's clock: every rank saves after the same step.
        keep_last: keep the last this many writes as ``step-<step>.ckpt`` too (None:
            last.ckpt alone).
        async_save: write in the background from a snapshot of the state, training going
            on meanwhile (see ``scaletrain.checkpoint.background``).
    """

    def __init__(
        self,
        dirpath: str,
        every_n_train_steps: int | None = None,
        every_n_minutes: float | None = None,
        keep_last: int | None = None,
        async_save: bool = False,
    ) -> None:
        for name, value in (("every_n_train_steps", every_n_train_steps), ("keep_last", keep_last)):
            if value is not None and value < 1:
                raise ValueError(
                    f"callbacks.last_checkpoint.{name}={value}: must be a positive integer, or null"
                )
        if every_n_minutes is not None and not 0 < every_n_minutes < float("inf"):
            raise ValueError(
                f"callbacks.last_checkpoint.every_n_minutes={every_n_minutes}: must be a "
                "positive number of minutes, or null"
            )
        self.path = Path(dirpath) / LAST
        self.every_n_train_steps = every_n_train_steps
        self.every_n_minutes = every_n_minutes
        self.keep_last = keep_last
        self.async_save = async_save
        self.last_write = time.monotonic()
        self.pending: tuple[Any, torch.Tensor] | None = None  # rank 0's word on the clock
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
        """Write the current state now (every rank calls this: sharded saves are collective);
        the time training waited for it goes to the loggers as ``perf/checkpoint_stall_sec``
        (a synchronous save: the whole write; in the background: the snapshot, and the
        wait for the write before it)."""
        started = time.perf_counter()
        keep = None  # rank 0 keeps the copies (a sharded checkpoint is one directory)
        if self.keep_last and trainer.is_global_zero:
            keep = self.retain(trainer.global_step)
        if self.async_save:  # kept once written, in the background
            trainer.save_checkpoint(self.path, False, storage_options=InBackground(then=keep))
        else:
            trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, to resume
            if keep is not None:
                keep()
        self.saved = (trainer.global_step, self.validations)
        self.last_write = time.monotonic()
        if trainer.is_global_zero:
            stall = {"perf/checkpoint_stall_sec": time.perf_counter() - started}
            for logger in trainer.loggers:
                logger.log_metrics(stall, step=trainer.global_step)
        return self.path

    def retain(self, step: int) -> Callable[[], None]:
        """What keeps the checkpoint of ``step`` as ``step-<step>.ckpt`` once last.ckpt
        holds it, and removes those older than the last ``keep_last``."""

        def keep() -> None:
            kept = self.path.with_name(f"step-{step:06d}.ckpt")
            keep_copy(self.path, kept)
            for old in kept_checkpoints(self.path.parent)[: -self.keep_last]:
                if old != kept:
                    remove(old)

        return keep

    def minutes_passed(self, trainer: L.Trainer) -> bool:
        """Whether ``every_n_minutes`` have passed since the last write, as rank 0 found
        at the previous step: its word is broadcast without waiting and read one step
        later, so that no rank waits and all save after the same step."""
        if self.every_n_minutes is None:
            return False
        due = time.monotonic() - self.last_write >= 60 * self.every_n_minutes
        if trainer.world_size == 1:
            return due
        passed = False
        if self.pending is not None:
            work, flag = self.pending
            work.wait()
            passed = bool(flag.item())
        # a save follows this answer: the next one counts from it
        flag = torch.tensor([int(due and not passed)], device=trainer.strategy.root_device)
        self.pending = (dist.broadcast(flag, src=0, async_op=True), flag)
        return passed

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
        self.last_write = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # inside a gradient-accumulation window: no optimizer step yet
        every = self.every_n_train_steps
        by_steps = bool(every) and trainer.global_step % every == 0
        by_clock = self.minutes_passed(trainer)  # every rank, every step: they agree
        if (by_steps or by_clock) and not ends_epoch(trainer):
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
        if self.pending is not None:
            self.pending[0].wait()  # the last broadcast, answered by now: leave none behind
            self.pending = None
        self._save_if_new(trainer)


STEP_CHECKPOINT = re.compile(r"step-(\d+)\.ckpt")


def kept_checkpoints(directory: Path) -> list[Path]:
    """The ``step-<step>.ckpt`` checkpoints of ``directory``, in the order they were
    written (a run resumed from an older one writes lower steps after higher ones)."""
    written = {}
    for path in directory.iterdir():
        match = STEP_CHECKPOINT.fullmatch(path.name)
        if match:
            written[path] = (path.stat().st_mtime_ns, int(match[1]))
    return sorted(written, key=written.get)


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (the best checkpoint by the monitored metric), and
    with ``async_save`` written in the background from a snapshot, as last.ckpt can be;
    the one it replaces is removed once it is written."""

    def __init__(self, *args: Any, async_save: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_save = async_save

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        options = InBackground() if self.async_save else None
        compat.save_model_checkpoint(self, trainer, filepath, options)


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
