"""A callback a test adds from the command line (``+callbacks.fail._target_=...``) to make
a run fail after it has trained some steps, as a bug in a user's code would."""

import lightning as L
from lightning.pytorch.callbacks import Callback


class FailAtStep(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step >= self.step:
            raise RuntimeError(f"failed at step {trainer.global_step}")
