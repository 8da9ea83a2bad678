"""Settings of a run's length that would not do what they say, found once the data is
known, each said in one line: a validation interval longer than an epoch (Lightning
refuses it; here every epoch's end validates instead) and a step limit that the epoch
limit reaches first (the run would stop early without a word)."""

import logging
import math

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DistributedSampler

from scaletrain.parallel.layout import data_parallel_rank

log = logging.getLogger("scaletrain")


def epoch_batches(trainer: L.Trainer) -> int | None:
    """Training batches in an epoch on each rank, as the Trainer will count them (its
    ``limit_train_batches`` applied); None where the data module cannot say."""
    datamodule = trainer.datamodule
    try:
        loader = datamodule.train_dataloader()
        batches = len(loader)
    except Exception:  # no data module, or an iterable dataset of unknown length
        return None
    if not isinstance(loader.sampler, DistributedSampler):
        # Lightning gives the loader a DistributedSampler over the data-parallel ranks
        batches = math.ceil(batches / data_parallel_rank(trainer.strategy)[0])
    limit = trainer.limit_train_batches
    return min(batches, limit) if isinstance(limit, int) else int(batches * limit)


class TrainingLength(Callback):
    """Checks the validation interval and the step limit against the epoch's length."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        batches = epoch_batches(trainer)
        if not batches:
            return
        interval = trainer.val_check_interval
        if (
            isinstance(interval, int)
            and interval > batches
            and trainer.check_val_every_n_epoch is not None
            and trainer.limit_val_batches
        ):
            trainer.val_check_interval = 1.0
            self.say(
                trainer,
                f"trainer.val_check_interval={interval}: an epoch has {batches} training "
                "batches; validating at the end of every epoch instead",
            )
        steps = math.ceil(batches / trainer.accumulate_grad_batches) * (trainer.max_epochs or 0)
        if (
            trainer.max_steps > 0
            and trainer.max_epochs not in (None, -1)
            and steps < (trainer.max_steps)
        ):
            self.say(
                trainer,
                f"trainer.max_steps={trainer.max_steps}: trainer.max_epochs="
                f"{trainer.max_epochs} ends the run first, after {steps} steps (an epoch has "
                f"{batches} batches); set trainer.max_epochs=-1 to train {trainer.max_steps}",
            )

    @staticmethod
    def say(trainer: L.Trainer, line: str) -> None:
        if trainer.is_global_zero:
            log.warning(line)
