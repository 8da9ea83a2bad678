"""``strategy=pipeline``: the strategy that owns the pipeline, so that the LightningModule
knows nothing of stages.

It cuts the module's net down to this rank's stage before the module parallelizes it
(:func:`~scaletrain.parallel.pipeline.keep_stages`), runs every batch through torch's
schedule with the module's ``loss`` for each microbatch, and then the module's own step on
the last stage with the outputs the schedule computed (:mod:`scaletrain.parallel.last_stage`).
Lightning's hooks stay in their places: the schedule's gradients are held aside until
Lightning's ``backward``, so that its ``zero_grad`` (which comes between ``training_step``
and ``backward``) and gradient accumulation behave as under any strategy; clipping by norm
takes the norm over every stage's gradients together.

What the strategy needs of the module: the net as ``module.net``, its plan as
``module.net_plan`` and the loss of a batch as ``module.loss(outputs, targets)``, with
batches of ``(inputs, targets)``: what :class:`~scaletrain.models.base.ScaleModule` gives.
"""

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch.optim import Optimizer

from scaletrain.errors import ConfigError
from scaletrain.parallel.last_stage import LoggedValues, answering
from scaletrain.parallel.layout import ParallelLayout
from scaletrain.parallel.pipeline import (
    Pipeline,
    PipelineOptions,
    Relay,
    clip_grad_norm_,
    keep_stages,
    name_every_stage_parameter,
    stage_of_parameter,
)
from scaletrain.parallel.strategy import ShardedStrategy
from scaletrain.runtime.ranks import logs_this_step

TIMELINE_FILE = "pipeline_timeline.json"


class PipelineStrategy(ShardedStrategy):
    """The 3-D mesh's sharded strategy, with this rank running its stages of the net."""

    def __init__(self, layout: ParallelLayout, options: PipelineOptions) -> None:
        super().__init__(layout, save_distributed_checkpoint=True)
        self.options = options
        self.relays: list[Relay] = []
        self.pipeline: Pipeline | None = None
        self.stage_group: Any = None  # the ranks holding this rank's stage
        self.within_step = False  # reductions then span the stage's ranks alone
        self.held_grads: list[torch.Tensor | None] = []  # the schedule's, until backward

    def setup_environment(self) -> None:
        super().setup_environment()
        if not self.relays:  # before configure_model: each rank builds its stages only
            module = self.lightning_module
            mesh = self.device_mesh["pipeline"]
            self.relays = keep_stages(module.net, module.net_plan, mesh, self.options)
            self.stage_group = self._stage_group()

    def _stage_group(self) -> Any:
        """The process group of the ranks that hold this rank's stage (data and tensor
        parallel); every rank creates every stage's, in order."""
        mine = None
        for stage_ranks in self.device_mesh.mesh.flatten(1).tolist():
            group = dist.new_group(stage_ranks)
            if self.global_rank in stage_ranks:
                mine = group
        return mine

    def setup(self, trainer: L.Trainer) -> None:
        if not self.lightning_module.automatic_optimization:
            raise ConfigError(
                "strategy=pipeline: the schedule runs each batch's backward, so a module with "
                "automatic_optimization=False has nothing for manual_backward; use automatic "
                "optimization, or another strategy"
            )
        super().setup(trainer)
        if self.pipeline is None:
            module = self.lightning_module
            self.pipeline = Pipeline(
                module.net,
                module.net_plan,
                self.relays,
                self.device_mesh["pipeline"],
                self.root_device,
                self.options,
                module.loss,
            )
        # Lightning clips through the precision plugin; its norm would be this stage's
        self.precision_plugin.clip_grad_by_norm = self.clip_grad_by_norm

    def optimizer_state(self, optimizer: Optimizer) -> dict[str, Any]:
        module = self.lightning_module
        ranks = self.layout.pipeline_parallel_size
        blocks = len(module.net_plan.block_container(module.net))
        stage_of = stage_of_parameter(module.net_plan, self.options, blocks, ranks, "net.")
        state = super().optimizer_state(optimizer)
        return name_every_stage_parameter(state, self.device_mesh["pipeline"], stage_of)

    # Training: the schedule, then the module's step on the last stage.

    def stage_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.lightning_module.parameters())

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        inputs, targets = batch
        trainer = self.lightning_module.trainer
        accumulation = trainer.accumulate_grad_batches
        parameters = self.stage_parameters()
        # the batches accumulated so far; none at the start of an accumulation (Lightning
        # clears them before the backward), so that two sets are never held at once
        starts = batch_idx % accumulation == 0
        before = [None if starts else p.grad for p in parameters]
        for p in parameters:
            p.grad = None
        with self.precision_plugin.train_step_context():
            result = self.pipeline.train_step(inputs, targets, accumulation)
        self.held_grads = [p.grad for p in parameters]
        for p, grad in zip(parameters, before, strict=True):
            p.grad = grad
        loss, outputs = result if result is not None else (None, None)
        step = self.lightning_module.training_step
        context = self.precision_plugin.train_step_context
        answer = self.on_last_stage(step, context, outputs, loss, batch, batch_idx, *args)
        if logs_this_step(trainer):
            self.log_busy_fractions()
        return answer

    def log_busy_fractions(self) -> None:
        """``perf/pipeline_busy_fraction/rank<N>``: the share of each rank's time spent
        computing since the last logged step, for every rank of this rank's pipeline (by
        global rank; every rank of it logs them all)."""
        group = self.device_mesh["pipeline"].get_group()
        fractions = [0.0] * dist.get_world_size(group)
        dist.all_gather_object(fractions, self.pipeline.timeline.busy_fraction(), group=group)
        for index, fraction in enumerate(fractions):
            rank = dist.get_global_rank(group, index)
            self.lightning_module.log(
                f"perf/pipeline_busy_fraction/rank{rank}", fraction, on_step=True, on_epoch=False
            )

    def on_train_end(self) -> None:
        """Write the last training step of every rank of rank 0's pipeline
        (``pipeline_timeline.json`` in the run directory): the spans the benchmark draws."""
        super().on_train_end()
        stages: list = [None] * self.device_mesh["pipeline"].size()
        last_step = self.pipeline.timeline.last_step()
        dist.all_gather_object(stages, last_step, group=self.device_mesh["pipeline"].get_group())
        if self.global_rank == 0:
            path = Path(self.lightning_module.trainer.default_root_dir) / TIMELINE_FILE
            path.write_text(json.dumps(stages))

    def backward(
        self, closure_loss: torch.Tensor, optimizer: Optimizer | None, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        """The schedule ran the backward: its gradients join those accumulated (which
        Lightning's zero_grad may just have cleared), between the backward hooks."""
        module = self.lightning_module
        closure_loss = self.precision_plugin.pre_backward(closure_loss, module)
        for p, grad in zip(self.stage_parameters(), self.held_grads, strict=True):
            if grad is None:
                continue
            if p.grad is None:
                p.grad = grad
            else:
                p.grad += grad
        self.held_grads = []
        return self.precision_plugin.post_backward(closure_loss, module)

    def clip_grad_by_norm(self, optimizer: Optimizer, clip_val: float) -> None:
        parameters = list(self.precision_plugin.main_params(optimizer))
        clip_grad_norm_(parameters, clip_val, self.pipeline.group)

    # Evaluation: the forward schedule, then the module's step on the last stage.

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        step = self.lightning_module.validation_step
        return self.evaluate(step, self.precision_plugin.val_step_context, batch, batch_idx, *args)

    def test_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        step = self.lightning_module.test_step
        return self.evaluate(step, self.precision_plugin.test_step_context, batch, batch_idx, *args)

    def evaluate(self, step: Callable[..., Any], context: Callable[[], Any], *args: Any) -> Any:
        """The forwards of ``args``' batch through the stages, then ``step(*args)``."""
        with context():
            outputs = self.pipeline.forward(args[0][0])
        return self.on_last_stage(step, context, outputs, None, *args)

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError(
            "strategy=pipeline: trainer.predict is not run through the stages; predict "
            "in one process from a checkpoint (scaletrain.consolidate makes one file)"
        )

    def on_last_stage(
        self,
        step: Callable[..., Any],
        context: Callable[[], Any],
        outputs: torch.Tensor | None,
        loss: torch.Tensor | None,
        *args: Any,
    ) -> Any:
        """``step(*args)`` on the last stage inside the precision plugin's ``context``,
        its net answering ``outputs``; on the other stages, what it logged is logged
        again and the batch's ``loss`` returned (None in evaluation)."""
        module = self.lightning_module
        logged, returned = LoggedValues(), None
        if self.pipeline.is_last:
            recording = logged.recording(module)
            with answering(module, outputs), recording, self.stage_reductions(), context():
                returned = step(*args)
        shared = [logged.calls, None if loss is None else loss.cpu()]
        stages = self.device_mesh["pipeline"]
        dist.broadcast_object_list(
            shared, group=stages.get_group(), group_src=self.pipeline.last_rank
        )
        if self.pipeline.is_last:
            return returned
        calls, loss = shared
        with self.stage_reductions():
            LoggedValues.replay(calls, module)
        return None if loss is None else loss.to(self.root_device)

    @contextmanager
    def stage_reductions(self) -> Iterator[None]:
        """Reductions and gathers the step asks for (``self.log(sync_dist=True)``,
        ``self.all_gather``, the strategy's ``reduce``) span the ranks of one stage: the
        other stages do not run the step."""
        self.within_step = True
        try:
            yield
        finally:
            self.within_step = False

    def reduce(self, tensor: Any, group: Any | None = None, reduce_op: Any = "mean") -> Any:
        if group is None and self.within_step:
            group = self.stage_group
        return super().reduce(tensor, group=group, reduce_op=reduce_op)

    def all_gather(self, tensor: torch.Tensor, group: Any | None = None, sync_grads: bool = False):
        if group is None and self.within_step:
            group = self.stage_group
        return super().all_gather(tensor, group=group, sync_grads=sync_grads)


def whole_net_size(trainer: L.Trainer) -> tuple[int, int]:
    """The whole net's parameters and their bytes (``net_size`` of the module, summed over
    the stages of a pipeline: a collective there, which every rank calls)."""
    count, size = trainer.lightning_module.net_size()
    if isinstance(trainer.strategy, PipelineStrategy):
        count, size = trainer.strategy.pipeline.sum_over_stages(count, size)
    return int(count), int(size)
