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

from scaletrain import compat


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
    logs its own object of that name; Lightning syncs them over every rank), with the
    value of the step's batch (what Lightning logs on a step)."""

    name: str
    step_value: torch.Tensor | None


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
                name = call.get("metric_attribute") or names[id(value)]
                step_value = compat.metric_step_value(value)
                value = MetricNamed(name, None if step_value is None else step_value.cpu())
            elif isinstance(value, torch.Tensor):
                value = value.detach().cpu()
            # a process group does not cross processes; the step's own group is the default
            self.calls.append({**call, "value": value, "sync_dist_group": None})
            log(*args, **kwargs)

        own = module.__dict__.get("log")  # an instance's own log, if it has one
        module.log = recorded  # for the step's duration
        try:
            yield
        finally:
            if own is None:
                del module.log
            else:
                module.log = own

    @staticmethod
    def replay(calls: list[dict[str, Any]], module: L.LightningModule) -> None:
        for call in calls:
            value = call["value"]
            if isinstance(value, MetricNamed):
                metric = module.get_submodule(value.name)
                if value.step_value is not None:
                    compat.set_metric_step_value(metric, value.step_value.to(module.device))
                value = metric
            elif isinstance(value, torch.Tensor):
                value = value.to(module.device)
            module.log(**{**call, "value": value})
