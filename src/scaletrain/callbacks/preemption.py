"""Preemption: SIGTERM (a scheduler's notice) or SIGINT (Ctrl+C) ends the run at a step
boundary; a single-process run first saves last.ckpt, and ``ckpt_path=last`` with the
same ``hydra.run.dir`` continues from there.

Lightning already turns SIGTERM into an exception raised on every rank at the same step
boundary (and forwards the signal to the ranks it started). Here SIGINT is given the
same treatment, so that under ddp no rank is interrupted halfway through a collective.
Multi-process runs stop cleanly but save nothing: Lightning's SIGTERM protocol
broadcasts from inside signal handlers, and any collective added after it (such as a
checkpoint's) can pair with the wrong partner and hang.
"""

import logging
import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.exceptions import SIGTERMException

log = logging.getLogger("scaletrain")


class CheckpointOnPreemption(Callback):
    def __init__(self) -> None:
        self.previous_sigint = None

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.previous_sigint = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.getsignal(signal.SIGTERM))

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if self.previous_sigint is not None:
            signal.signal(signal.SIGINT, self.previous_sigint)
            self.previous_sigint = None

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        checkpoint = trainer.checkpoint_callback
        if not isinstance(exception, SIGTERMException) or checkpoint is None:
            return
        if trainer.world_size > 1:
            log.warning("stopped by a signal at step %d; nothing saved", trainer.global_step)
            return
        path = (
            Path(checkpoint.dirpath)
            / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        )
        trainer.save_checkpoint(path)
        if trainer.is_global_zero:
            log.info("stopped by a signal at step %d: saved %s", trainer.global_step, path)
