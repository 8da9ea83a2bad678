"""A callback that kills its own rank with SIGKILL, as a crashed machine would end it, at
the start of step ``at_step`` of the first attempt (torchrun's agent restarts the
workers; a restarted worker trains on). Given on the command line as
``+callbacks.kill={_target_: tests.kill_rank.KillRank, rank: 1, at_step: 10}``."""

import os
import signal

from lightning.pytorch.callbacks import Callback

from scaletrain.runtime.ranks import elastic_restarts


class KillRank(Callback):
    def __init__(self, rank: int, at_step: int) -> None:
        self.rank, self.at_step = rank, at_step

    def on_train_batch_start(self, trainer, *args) -> None:
        here = trainer.global_rank == self.rank and trainer.global_step == self.at_step
        if here and elastic_restarts() == 0:  # the first attempt only
            os.kill(os.getpid(), signal.SIGKILL)
