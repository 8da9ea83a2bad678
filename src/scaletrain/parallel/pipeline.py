"""Pipeline parallelism: consecutive blocks of the net on different ranks (stages).

Each rank keeps only its stages of the net: their runs of blocks, plus the modules before
the blocks (``model.parallel.pipeline.first``) where it holds the first stage and those
after them (``.last``) where it holds the last (:func:`keep_stages`). The parameters keep
their names, so a pipeline's checkpoints load under any other layout. A stage runs the
net's own forward, unchanged (:class:`StageForward`), which fits any net whose forward
runs the blocks one after the other, each on the previous one's output, between what
comes before and after; a rank of several stages (the interleaved and V-shaped
schedules) runs each on a view of its net that shares its modules (:func:`stage_view`).
Every global batch is cut into microbatches that flow through the stages as torch's
schedule (``torch.distributed.pipelining``) orders them; the last stage computes the loss
of each, and each stage accumulates its own parameters' gradients.

With data and tensor parallelism the world is a 3-D grid, pipeline x data x tensor
(``scaletrain.parallel.layout``): each stage is sharded with FSDP2 over its data-parallel
ranks and split with tensor parallelism inside its tensor-parallel groups, as a whole net
would be.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import FSDPModule
from torch.distributed.pipelining import (
    PipelineStage,
    Schedule1F1B,
    ScheduleGPipe,
    ScheduleInterleaved1F1B,
    ScheduleInterleavedZeroBubble,
    ScheduleZBVZeroBubble,
)
from torch.distributed.tensor import DTensor

from scaletrain import compat
from scaletrain.conventions import IGNORE_INDEX
from scaletrain.parallel.net_plan import NetPlan
from scaletrain.parallel.timeline import StageTimeline

SCHEDULES = {
    "gpipe": ScheduleGPipe,
    "1f1b": Schedule1F1B,
    "interleaved_1f1b": ScheduleInterleaved1F1B,
    "interleaved_zero_bubble": ScheduleInterleavedZeroBubble,
    "zbv_zero_bubble": ScheduleZBVZeroBubble,
}
# The schedules that run several stages on each rank, and how they place them: looped
# (stage s on rank s % ranks) or V-shaped (rank r holds stages r and 2 x ranks - 1 - r,
# so that the first rank holds the last stage too).
LOOPED = ("interleaved_1f1b", "interleaved_zero_bubble")
V_SHAPED = ("zbv_zero_bubble",)
# The schedules that compute the gradients of the weights apart from those of the inputs
ZERO_BUBBLE = ("interleaved_zero_bubble", "zbv_zero_bubble")


def stages_per_rank(schedule: str, given: Any = None) -> Any:
    """``given`` (``strategy.stages_per_rank``), or, where it is None, the schedule's
    default: 2 for the interleaved and V-shaped schedules, 1 for the others."""
    if given is not None:
        return given
    return 2 if schedule in (*LOOPED, *V_SHAPED) else 1


@dataclass(frozen=True)
class PipelineOptions:
    """How the net is cut into stages and how microbatches flow through them."""

    schedule: str = "1f1b"
    microbatches: int = 4
    # Blocks of each stage, first to last; None: as even as the count allows (the
    # earlier stages take one more where it does not divide).
    stage_blocks: tuple[int, ...] | None = None
    stages_per_rank: int = 1

    def rank_stages(self, rank: int, ranks: int) -> list[int]:
        """The stages (by index) that ``rank`` of ``ranks`` holds."""
        if self.schedule in V_SHAPED:
            return [rank, 2 * ranks - 1 - rank]
        return [rank + ranks * turn for turn in range(self.stages_per_rank)]

    def stage_rank(self, stage: int, ranks: int) -> int:
        """The rank (of ``ranks``) that holds ``stage``."""
        if self.schedule in V_SHAPED:
            return stage if stage < ranks else 2 * ranks - 1 - stage
        return stage % ranks


def stage_ranges(
    num_blocks: int, stages: int, stage_blocks: Sequence[int] | None = None
) -> list[range]:
    """The blocks (by index) of each stage."""
    if stage_blocks is None:
        base, extra = divmod(num_blocks, stages)
        stage_blocks = [base + (stage < extra) for stage in range(stages)]
    starts = [sum(stage_blocks[:stage]) for stage in range(len(stage_blocks) + 1)]
    return [range(start, end) for start, end in zip(starts[:-1], starts[1:], strict=True)]


def split_problems(
    blocks: int,
    where: str,
    ranks: int,
    stage_blocks: Sequence[int] | None,
    per_rank: int = 1,
) -> list[str]:
    """What keeps a net of ``blocks`` blocks (at ``where``) from being cut into
    ``per_rank`` stages on each of ``ranks`` pipeline ranks, each of at least one block
    (``stage_blocks``: the blocks of each, or None for an even split)."""
    stages = ranks * per_rank
    if stage_blocks is None:
        if stages > blocks and per_rank == 1:
            return [
                f"strategy.pipeline_parallel_size={stages}: more stages than the net's "
                f"{blocks} block{'s' * (blocks != 1)} ({where}); valid: 1 to {blocks}"
            ]
        if stages > blocks:
            return [
                f"strategy.stages_per_rank={per_rank}: {ranks} x {per_rank} = {stages} stages, "
                f"more than the net's {blocks} block{'s' * (blocks != 1)} ({where}); valid: "
                f"at most {blocks} stages in all"
            ]
        return []
    given = list(stage_blocks)
    if len(given) != stages or sum(given) != blocks or min(given) < 1:
        return [
            f"strategy.stage_blocks={given}: must give each of the {stages} stages at least "
            f"one block, {blocks} in all ({where}); or null for an even split"
        ]
    return []


class Relay:
    """What passes between a stage's forward and the hooks and stand-ins inside the net:
    the activations received from the previous stage, this stage's output, and what the
    net passed on to the block after the stage."""

    def __init__(self, index: int, held: range) -> None:
        self.index = index  # the stage's, in the pipeline
        self.held = held  # the blocks (by index) this stage holds
        self.received: torch.Tensor | None = None
        self.captured: torch.Tensor | None = None
        self.passed_on: torch.Tensor | None = None


class StandIn(nn.Module):
    """Takes the place of a module that this stage does not hold, so that the net's own
    forward runs unchanged: it passes its first argument on, or, in place of a module
    before the blocks on a later stage, the activations received (whatever it computes
    there is replaced by them at the stage's first block)."""

    def __init__(self, relay: Relay | None = None) -> None:
        super().__init__()
        self.relay = relay

    def forward(self, *args, **kwargs):
        if self.relay is not None:
            return self.relay.received
        return args[0] if args else next(iter(kwargs.values()))


def replace_module(net: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attribute = name.rpartition(".")
    setattr(net.get_submodule(parent), attribute, module)


def keep_stages(
    net: nn.Module, plan: NetPlan, mesh: DeviceMesh, options: PipelineOptions
) -> list[Relay]:
    """Cut ``net`` in place down to this rank's stages (its coordinate on the pipeline
    ``mesh``): their blocks, the first modules where the first stage is among them, the
    last ones where the last is; every other block or end module is a :class:`StandIn`.
    Parameters keep their names. Returns a relay for each of the stages, with which
    :class:`StageForward` runs it (on the net itself for one stage per rank, on a view of
    the net of its own for each of several: :func:`stage_view`)."""
    rank, ranks = mesh.get_local_rank(), mesh.size()
    stages = ranks * options.stages_per_rank
    container = plan.block_container(net)
    ranges = stage_ranges(len(container), stages, options.stage_blocks)
    relays = [Relay(index, ranges[index]) for index in options.rank_stages(rank, ranks)]
    held = {block for relay in relays for block in relay.held}
    for index in range(len(container)):
        if index not in held:
            container[index] = StandIn()
    # with one stage, the net is the stage; with several, each view has stand-ins of its own
    own_relay = relays[0] if len(relays) == 1 else None
    if not any(relay.index == 0 for relay in relays):
        for name in plan.first:
            replace_module(net, name, StandIn(own_relay))
    if not any(relay.index == stages - 1 for relay in relays):
        for name in plan.last:
            replace_module(net, name, StandIn())
    return relays


def shallow_copy(module: nn.Module) -> nn.Module:
    """``module`` as a new object sharing its parameters, buffers, children and hooks (FSDP2's
    among them), of its own class: FSDP2's class for it would look for a state of the copy's
    own."""
    plain = next(cls for cls in type(module).__mro__ if not issubclass(cls, FSDPModule))
    copy = object.__new__(plain)
    copy.__dict__ = {**module.__dict__, "_modules": dict(module._modules)}
    return copy


def stage_view(
    net: nn.Module, plan: NetPlan, relay: Relay, stages: int
) -> tuple[nn.Module, list[tuple[nn.Module, nn.Module]]]:
    """One of several stages of this rank as a net of its own: ``net`` with the blocks of
    its other stages and the end modules this stage does not hold replaced by stand-ins,
    every module it holds shared with ``net`` (whose parameters the optimizer and the
    checkpoints see). Also the copies made on the way (the net, the block container, the
    modules between them), each with the module it copies, whose training mode it must
    follow."""
    replacements: dict[str, nn.Module] = {}
    container = plan.block_container(net)
    blocks = shallow_copy(container)
    blocks._modules = {
        key: block if int(key) in relay.held else StandIn()
        for key, block in container._modules.items()
    }
    copies = [(blocks, container)]
    replacements[plan.blocks] = blocks
    if relay.index > 0:
        replacements.update({name: StandIn(relay) for name in plan.first})
    if relay.index < stages - 1:
        replacements.update({name: StandIn() for name in plan.last})
    view = shallow_copy(net)
    copies.append((view, net))
    for name, module in replacements.items():
        *path, attribute = name.split(".")
        parent, original = view, net
        for part in path:  # copied on the way down, so that net keeps its own
            original = original._modules[part]
            child = shallow_copy(parent._modules[part])
            copies.append((child, original))
            parent._modules[part] = child
            parent = child
        parent._modules[attribute] = module
    return view, copies


class StageForward(nn.Module):
    """One stage of the net, run by the net's own forward on the original inputs (every
    stage receives them) with the stage's stand-ins: the activations received enter its
    first block in place of what the stand-ins before it computed, and, before the last
    stage, its output is its last block's output."""

    def __init__(
        self,
        net: nn.Module,
        plan: NetPlan,
        relay: Relay,
        last: bool,
        copies: Sequence[tuple[nn.Module, nn.Module]] = (),
    ):
        super().__init__()
        self.net, self.relay, self.is_last = net, relay, last
        self.copies = copies  # of a stage_view: (copy, original) pairs
        container, held = plan.block_container(net), relay.held
        if held.start > 0:
            # prepended: the activations are in place before FSDP2's hook sees the input
            container[held.start].register_forward_pre_hook(self._receive, prepend=True)
        if not last:
            container[held.stop - 1].register_forward_hook(self._capture)
            container[held.stop].register_forward_pre_hook(self._pass_on)
        self.net_name = type(net).__name__

    def _receive(self, module: nn.Module, args: tuple) -> tuple:
        return (self.relay.received, *args[1:])

    def _capture(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        self.relay.captured = output

    def _pass_on(self, module: nn.Module, args: tuple) -> None:
        self.relay.passed_on = args[0] if args else None

    def forward(self, *received: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        self.relay.received = received[0] if received else None
        for copy, original in self.copies:  # Lightning's train() and eval() reach originals
            copy.training = original.training
        output = self.net(inputs)
        if not self.is_last:
            output = self.relay.captured
            if self.relay.passed_on is not output:
                # a stage's output must be all the next block needs, or stages would differ
                raise ValueError(
                    f"strategy=pipeline: {self.net_name}.forward does not pass each block's "
                    "output straight to the next block (x = block(x)); keep residual "
                    "connections and other steps between blocks inside the blocks"
                )
        self.relay.received = self.relay.captured = self.relay.passed_on = None
        return output


def pipeline_stages(
    net: nn.Module,
    plan: NetPlan,
    relays: list[Relay],
    ranks: int,
    device: torch.device,
    group: dist.ProcessGroup | None = None,
) -> list[PipelineStage]:
    """torch's stages for this rank's ``relays`` (from :func:`keep_stages`), of a pipeline
    of ``ranks`` ranks (those of ``group``)."""
    stages = ranks * len(relays)
    several = len(relays) > 1
    views = [stage_view(net, plan, relay, stages) if several else (net, []) for relay in relays]
    return [
        PipelineStage(
            StageForward(view, plan, relay, last=relay.index == stages - 1, copies=copies),
            stage_index=relay.index,
            num_stages=stages,
            device=device,
            group=group,
        )
        for relay, (view, copies) in zip(relays, views, strict=True)
    ]


class Pipeline:
    """This rank's stages of the net (one, or several for the interleaved and V-shaped
    schedules) and the schedule that runs them with the other ranks' stages of the
    pipeline ``mesh`` (the mesh's pipeline dimension).

    ``loss`` is the LightningModule's loss of one microbatch."""

    def __init__(
        self,
        net: nn.Module,
        plan: NetPlan,
        relays: list[Relay],
        mesh: DeviceMesh,
        device: torch.device,
        options: PipelineOptions,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        self.group, self.device = mesh.get_group(), device
        self.stages = pipeline_stages(net, plan, relays, mesh.size(), device, self.group)
        self.is_last = any(stage.is_last for stage in self.stages)
        # the rank of the pipeline's group that holds the last stage (and the outputs)
        self.last_rank = options.stage_rank(self.stages[0].num_stages - 1, mesh.size())
        several = options.schedule in (*LOOPED, *V_SHAPED)  # schedules of a list of stages
        self.loss, self.accumulation = loss, 1
        self.microbatches = options.microbatches
        # Every batch is padded to the rows of the first (the stages' buffers have its
        # microbatches' shapes), with targets that count in no loss.
        self.rows: int | None = None
        self.real_targets = 1  # in the batch being run
        self.timeline = StageTimeline()
        for stage in self.stages:
            self.timeline.watch(stage)

        def schedule() -> Any:
            return SCHEDULES[options.schedule](
                self.stages if several else self.stages[0],
                n_microbatches=options.microbatches,
                loss_fn=self.timeline.timed("loss", self._microbatch_loss),
                # the loss is scaled here, rather than every gradient after the step (which
                # would also divide what earlier batches accumulated)
                scale_grads=False,
            )

        self.schedule = schedule()
        # a V's own evaluation fails (see compat.forward_only): one of forwards alone
        self.evaluation = compat.forward_only(schedule()) if options.schedule in V_SHAPED else None

    def _microbatch_loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """This microbatch's share of the batch's mean loss over its real targets, so that
        the gradient is that of the batch's mean loss however its targets fall into
        microbatches; a microbatch of padding alone adds nothing. In evaluation no loss
        is computed (the schedules ask for one even there)."""
        if not torch.is_grad_enabled():
            return output.new_zeros(())
        real = (target != IGNORE_INDEX).sum()
        if not real:
            return output.sum() * 0
        return self.loss(output, target) * (real / self.real_targets) / self.accumulation

    def _batch_rows(self, rows: int) -> int:
        """The rows every batch is padded to: those of the first, made a multiple of the
        microbatches."""
        if self.rows is None:
            self.rows = -(-rows // self.microbatches) * self.microbatches
        return self.rows

    def _padded_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """``inputs`` padded to :meth:`_batch_rows` by repeating the last."""
        missing = self._batch_rows(len(inputs)) - len(inputs)
        if missing < 0:
            raise ValueError(
                f"strategy=pipeline: a batch of {len(inputs)} samples on this rank, more than "
                f"the first one's {self.rows}; give every training batch the same size"
            )
        if not missing:
            return inputs
        return torch.cat([inputs, inputs[-1:].expand(missing, *inputs.shape[1:])])

    def _padded(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``inputs`` and ``targets`` padded to :meth:`_batch_rows` (the targets of the
        padding ignored); counts the real targets."""
        self.real_targets = int((targets != IGNORE_INDEX).sum())
        padded = self._padded_inputs(inputs)
        missing = len(padded) - len(inputs)
        if missing:
            pad = targets.new_full((missing, *targets.shape[1:]), IGNORE_INDEX)
            targets = torch.cat([targets, pad])
        return padded, targets

    def sum_over_stages(self, *values: float) -> list[float]:
        """Each of ``values`` summed over the stages (a collective: every stage calls it;
        on the stage's device, where nccl needs it)."""
        summed = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(summed, group=self.group)
        return summed.tolist()

    def _target(self, targets: torch.Tensor) -> torch.Tensor | None:
        return targets if self.is_last else None

    def train_step(
        self, inputs: torch.Tensor, targets: torch.Tensor, accumulation: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Forward and backward of one batch through every stage, its gradients divided
        by ``accumulation`` (the Trainer's accumulate_grad_batches) as Lightning's own
        backward would; on the last stage, the batch's mean loss and the net's outputs
        (detached), None on the others. The gradients are added to the parameters'
        ``grad``."""
        self.accumulation = accumulation
        losses: list[torch.Tensor] = []
        padded_inputs, padded_targets = self._padded(inputs, targets)
        with self.timeline.step():
            outputs = self.schedule.step(
                target=self._target(padded_targets), losses=losses, inputs=padded_inputs
            )
        if not self.is_last:
            return None
        # the shares of the batch's mean loss (each divided by the accumulation)
        loss = torch.stack([part.detach() for part in losses]).sum() * self.accumulation
        return loss, outputs[: len(inputs)].detach()

    @torch.no_grad()
    def forward(self, inputs: torch.Tensor) -> torch.Tensor | None:
        """The net's output for ``inputs`` on the last stage (None on the others), run in
        pieces of the training batch's rows."""
        rows = self._batch_rows(len(inputs))
        outputs = []
        for start in range(0, len(inputs), rows):
            piece = inputs[start : start + rows]
            padded = self._padded_inputs(piece)
            no_targets = padded.new_zeros(len(padded))  # in place of targets, never read
            if self.evaluation is not None:
                output = self.evaluation.eval(target=self._target(no_targets), inputs=padded)
            else:
                output = self.schedule.eval(target=self._target(no_targets), inputs=padded)
            outputs.append(None if output is None else output[: len(piece)])
        return None if outputs[0] is None else torch.cat(outputs)


def name_every_stage_parameter(
    optimizer_state: dict, mesh: DeviceMesh, stage_of: Callable[[str], int]
) -> dict:
    """``optimizer_state`` (keyed by parameter name, for a distributed checkpoint) with
    each param group listing the parameters of every stage of the pipeline ``mesh``, in
    stage order (``stage_of`` a name's stage), as one process lists them. Each rank's
    optimizer knows only its own stages'; a distributed checkpoint keeps one rank's copy of
    such a non-tensor value, which must describe the whole net for the checkpoint to load
    under another layout."""
    groups = [group["params"] for group in optimizer_state["param_groups"]]
    gathered: list = [None] * mesh.size()
    dist.all_gather_object(gathered, groups, group=mesh.get_group())
    for index, group in enumerate(optimizer_state["param_groups"]):
        names = [name for rank in gathered for name in rank[index]]
        group["params"] = sorted(names, key=stage_of)  # stable: each stage's own order
    return optimizer_state


def stage_of_parameter(
    plan: NetPlan, options: PipelineOptions, num_blocks: int, ranks: int, prefix: str = ""
) -> Callable[[str], int]:
    """The stage that holds each parameter, by its name (under ``prefix``)."""
    stages = ranks * options.stages_per_rank
    ranges = stage_ranges(num_blocks, stages, options.stage_blocks)
    owners = {
        f"{prefix}{plan.blocks}.{block}.": stage
        for stage, held in enumerate(ranges)
        for block in held
    }
    owners.update({f"{prefix}{name}.": 0 for name in plan.first})
    owners.update({f"{prefix}{name}.": stages - 1 for name in plan.last})

    def stage_of(name: str) -> int:
        return next((stage for start, stage in owners.items() if name.startswith(start)), 0)

    return stage_of


def clip_grad_norm_(
    parameters: Sequence[nn.Parameter], max_norm: float, group: dist.ProcessGroup
) -> torch.Tensor:
    """Clip the gradients of the whole net, spread over the stages of ``group``, to a
    total norm of at most ``max_norm``; return that norm. Each stage's norm covers its own
    parameters (whole, where they are sharded DTensors), the stages' squares are summed."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    squared = norm.float() ** 2
    dist.all_reduce(squared, group=group)
    total = squared.sqrt()
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total, foreach=True)
    return total
