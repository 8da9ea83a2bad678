"""A callback that writes the net's full initial weights (gathered from every rank's
shards) before the first training step, for tests of sharded initialization: each rank
writes ``<path>.rank<N>`` with the parameters it holds a part of (a pipeline stage holds
only its own).

Given on the command line as
``+callbacks.initial_weights={_target_: tests.initial_weights.SaveInitialWeights, path: <file>}``.
"""

import torch
from lightning.pytorch.callbacks import Callback
from torch.distributed.tensor import DTensor


class SaveInitialWeights(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_start(self, trainer, pl_module) -> None:
        full = {
            name: (param.full_tensor() if isinstance(param, DTensor) else param).detach().cpu()
            for name, param in pl_module.net.named_parameters()
        }
        torch.save(full, f"{self.path}.rank{trainer.global_rank}")
