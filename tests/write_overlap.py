"""A callback that records the training steps that began while a checkpoint was being
written in the background, into ``<path>.rank<N>`` (JSON): proof that training went on
during the write. Given on the command line as
``+callbacks.overlap={_target_: tests.write_overlap.WriteOverlap, path: <file>}``."""

import json

from lightning.pytorch.callbacks import Callback


def background_writes(trainer):
    """The run's background writer: the sharded strategy's, or the checkpoint IO's."""
    found = getattr(trainer.strategy, "background", None)
    return found or trainer.strategy.checkpoint_io.background


class WriteOverlap(Callback):
    def __init__(self, path: str) -> None:
        self.path = path
        self.steps: list[int] = []

    def on_train_batch_start(self, trainer, *args) -> None:
        if background_writes(trainer).busy:
            self.steps.append(trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        writes = background_writes(trainer)
        record = {"steps": self.steps, "writes": writes.writes}
        with open(f"{self.path}.rank{trainer.global_rank}", "w") as file:
            json.dump(record, file)
