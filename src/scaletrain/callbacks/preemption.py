"""Preemption of a single-process run: SIGTERM (a scheduler's notice) or SIGINT (Ctrl+C)
saves last.ckpt at the next step boundary and ends the run with status 143;
``ckpt_path=last`` with the same ``hydra.run.dir`` continues from there.

Lightning turns SIGTERM into an exception at a step boundary; SIGINT is given the same
treatment here. Multi-process runs are left to Lightning's own SIGTERM handling, which
broadcasts from inside signal handlers: adding a checkpoint's collectives after it can
pair them with the wrong partner and hang, so nothing is saved there.
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
        if trainer.world_size > 1:
            return
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
