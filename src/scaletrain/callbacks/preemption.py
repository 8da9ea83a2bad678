"""Preemption: SIGTERM (a scheduler's notice), SIGUSR1/SIGUSR2 (its warning before a time
limit) or SIGINT (Ctrl+C) during training stops every rank after the same training step
(the next or the one after), saves last.ckpt there and ends the run with status 143;
``python -m scaletrain.train resume=<run dir>`` continues from it, and under SLURM the job
is requeued to do so.

Where that step is the last of an epoch (or of the training), the stop waits for the
epoch's validation and its checkpoints: Lightning resumes from a state saved before that
validation by skipping it, so the resumed run would lack a validation, and perhaps a best
checkpoint, that the uninterrupted run has.

The signal handler (:mod:`scaletrain.runtime.signals`) only records the signal while steps
run. After each step the ranks agree, through an all-reduce of that record, whether any
of them was signalled, so they all stop at the same step and reach the checkpoint's
collectives together, whichever rank the signal reached. (Lightning's own SIGTERM
handler runs a collective inside the handler, which pairs with the wrong partner on the
other ranks; it is replaced whenever Lightning installs it.) Outside the steps (setting
up, validating, testing), and where a step outlasts ``grace_period`` seconds, the run
stops without saving; the epoch-end validation counts as part of its last step.

The callback is a ``Checkpoint``, ordered after the other checkpoint callbacks, so that
at an epoch's end it stops only once they have recorded the validation and saved.
"""

import logging

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.callbacks import Checkpoint

from scaletrain.callbacks.checkpoints import ends_epoch, latest_checkpoint
from scaletrain.runtime import signals

log = logging.getLogger("scaletrain")


class CheckpointOnPreemption(Checkpoint):
    """Args:
    grace_period: seconds a training step may still take after the signal before
        the run exits without saving.
    """

    def __init__(self, grace_period: float = 30.0) -> None:
        if not grace_period > 0:
            raise ValueError(
                f"callbacks.checkpoint_on_preemption.grace_period={grace_period}: "
                "must be a positive number of seconds"
            )
        self.grace_period = grace_period
        self.pending: tuple[dist.Work, torch.Tensor] | None = None  # this step's all-reduce
        self.stop_at_epoch_end = False  # agreed at an epoch's last step: stop after it

    @staticmethod
    def handling() -> signals.SignalStop | None:
        stop = signals.current()
        if stop is not None:
            stop.install()  # again: Lightning has just replaced the SIGTERM handler
        return stop

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        stop = signals.current()
        if stop is not None:
            stop.grace_period = self.grace_period  # the default until the run gets here

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.pending = None
        self.stop_at_epoch_end = False

    def _steps_begin(self) -> None:
        stop = self.handling()
        if stop is None:
            return
        if stop.received is not None and not self.stop_at_epoch_end:
            stop.stop_now()  # the signal came during validation
        stop.at_step_boundary = True

    def _steps_pause(self) -> None:
        stop = self.handling()
        if stop is not None and not self.stop_at_epoch_end:
            stop.at_step_boundary = False
            if stop.received is not None:
                stop.stop_now()  # signalled after the last step's check

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.handling()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx) -> None:
        stop = signals.current()
        if stop is not None:
            stop.at_step_boundary = True  # from the first step on, a signal waits for its end

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        self._steps_pause()

    def on_validation_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._steps_begin()  # back to training

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module) -> None:
        self.handling()

    def on_test_start(self, trainer: L.Trainer, pl_module) -> None:
        self.handling()

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._steps_pause()

    def any_rank_signalled(self, trainer: L.Trainer, received: bool) -> bool:
        """Whether any rank had received a signal by the end of the previous check.

        The all-reduce for this step is started without waiting and read at the next
        check, by when it has long finished: no rank waits for the others here (a
        blocking one cost 1.5% of ddp throughput). Every rank reads the same results in
        the same order, so they all stop after the same step.
        """
        if trainer.world_size == 1:
            return received
        if self.pending is not None:
            work, flag = self.pending
            self.pending = None
            work.wait()
            if flag.item():
                return True
        flag = torch.tensor([int(received)], device=trainer.strategy.root_device)
        self.pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True), flag)
        return False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # never inside a gradient-accumulation window: its gradients are not saved
        stop = signals.current()
        if stop is None or not self.any_rank_signalled(trainer, stop.received is not None):
            return
        if ends_epoch(trainer):
            self.stop_at_epoch_end = True  # once its validation has run and been saved
            return
        self.stop_here(trainer, stop)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        stop = signals.current()
        if self.stop_at_epoch_end and stop is not None:
            self.stop_here(trainer, stop)

    def stop_here(self, trainer: L.Trainer, stop: signals.SignalStop) -> None:
        """Save last.ckpt (unless it holds this very state already) and stop the run."""
        stop.stopping = True  # the step has ended: the save may take its time
        step = trainer.global_step
        latest = latest_checkpoint(trainer)
        if latest is not None:
            # saved at the end of a training batch, so the resume continues with the next
            # batch of the epoch (at an epoch's end, the checkpoint callbacks saved already)
            path = latest.save_if_new(trainer)
            log.info("stopped by a signal at step %d: saved %s", step, path)
        elif trainer.is_global_zero:
            log.warning("stopped by a signal at step %d; no last_checkpoint callback to save", step)
        raise signals.Preempted(stop.exit_status)
