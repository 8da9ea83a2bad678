"""The LightningModule's own steps under a pipeline, run where the net's outputs are: on
the last stage.

The schedule has computed the outputs (and, in training, the gradients); the module's
``training_step``, ``validation_step`` or ``test_step`` then runs unchanged on the last
stage, its net answering with those outputs (:func:`answering`). What the step logs is
recorded (:class:`LoggedValues`) and logged again on every other stage, so that every rank
holds the same metrics: rank 0, which writes the loggers, holds the first stage, and
checkpoint and early-stopping callbacks decide alike on every rank.
"""

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import Metric


class Answer(nn.Module):
    """Stands in for the net during a step: returns the outputs the schedule computed."""

    def __init__(self, outputs: torch.Tensor) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.outputs


@contextmanager
def answering(module: L.LightningModule, outputs: torch.Tensor) -> Iterator[None]:
    """``module.net`` returns ``outputs`` while the context lasts."""
    net = module.net
    module.net = Answer(outputs)
    try:
        yield
    finally:
        module.net = net


@dataclass(frozen=True)
class MetricNamed:
    """A torchmetrics object logged by the step, by its name in the module (each rank
    logs its own object of that name; Lightning syncs them over every rank)."""

    name: str


class LoggedValues:
    """Records every ``module.log`` call of a step, in a form that crosses processes, and
    makes the same calls on another rank."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    @contextmanager
    def recording(self, module: L.LightningModule) -> Iterator[None]:
        log = module.log
        names = {id(child): name for name, child in module.named_modules()}

        def recorded(*args: Any, **kwargs: Any) -> None:
            call = inspect.signature(log).bind(*args, **kwargs).arguments
            value = call["value"]
            if isinstance(value, Metric):
                value = MetricNamed(names[id(value)])
            elif isinstance(value, torch.Tensor):
                value = value.detach().cpu()
            # a process group does not cross processes; the step's own group is the default
            self.calls.append({**call, "value": value, "sync_dist_group": None})
            log(*args, **kwargs)

        module.log = recorded  # the instance's log, for the step's duration
        try:
            yield
        finally:
            del module.log

    @staticmethod
    def replay(calls: list[dict[str, Any]], module: L.LightningModule) -> None:
        for call in calls:
            value = call["value"]
            if isinstance(value, MetricNamed):
                value = module.get_submodule(value.name)
            elif isinstance(value, torch.Tensor):
                value = value.to(module.device)
            module.log(**{**call, "value": value})
