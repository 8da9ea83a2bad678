"""A short summary of the net at the start of training: its parts and their sizes."""

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities.model_summary import get_human_readable_count
from torch import nn

from scaletrain.nets.build import build_net
from scaletrain.parallel.pipeline import stage_ranges
from scaletrain.parallel.pipeline_strategy import PipelineStrategy

log = logging.getLogger("scaletrain")


def parameter_count(module: nn.Module) -> int:
    """Parameters of ``module`` (a sharded one counts its whole tensors)."""
    return sum(p.numel() for p in module.parameters())


def count(number: int) -> str:
    """``4.8 K``, ``870 K``, ``124 M``."""
    return get_human_readable_count(number).strip()


def class_name(module: nn.Module) -> str:
    """The net's own class name (FSDP2 wraps it in a class named ``FSDP<name>``)."""
    name = type(module).__name__
    return name.removeprefix("FSDP") if name.startswith("FSDP") else name


def describe_part(module: nn.Module) -> str:
    """``Linear``, or ``4 x Block`` for a list of like modules."""
    if isinstance(module, nn.ModuleList | nn.Sequential) and len(module):
        kinds = {class_name(child) for child in module}
        if len(kinds) == 1:
            return f"{len(module)} x {kinds.pop()}"
    return class_name(module)


def summary_lines(net: nn.Module) -> list[str]:
    """One line for the whole net, one for each of its direct parts."""
    total = parameter_count(net)
    size = sum(p.numel() * p.element_size() for p in net.parameters())
    dtype = str(next(net.parameters(), torch.empty(0)).dtype).removeprefix("torch.")
    lines = [f"{class_name(net)}: {count(total)} parameters ({size / 1e6:.2f} MB, {dtype})"]
    parts = [
        (name, describe_part(child), parameter_count(child)) for name, child in net.named_children()
    ]
    width = max((len(name) for name, *_ in parts), default=0)
    kind_width = max((len(kind) for _, kind, _ in parts), default=0)
    for name, kind, parts_count in parts:
        lines.append(f"  {name:<{width}}  {kind:<{kind_width}}  {count(parts_count):>7}")
    return lines


def stage_lines(num_blocks: int, ranks: int, options, plan) -> list[str]:
    """Which blocks (and modules before and after them) each pipeline stage holds, and,
    with several stages per rank, on which rank."""
    stages = ranks * options.stages_per_rank
    ranges = stage_ranges(num_blocks, stages, options.stage_blocks)

    def where(stage: int) -> str:
        return f" (rank {options.stage_rank(stage, ranks)})" if options.stages_per_rank > 1 else ""

    return [
        f"  pipeline stage {stage}{where(stage)}: blocks {blocks.start}-{blocks.stop - 1}"
        + (f" and {', '.join(plan.first)}" if stage == 0 and plan.first else "")
        + (f" and {', '.join(plan.last)}" if stage == stages - 1 and plan.last else "")
        for stage, blocks in enumerate(ranges)
    ]


class NetSummary(Callback):
    """Logs :func:`summary_lines` of ``pl_module.net`` once, on rank 0, when fitting starts
    (after the net was sharded: the counts are those of the whole net). In a pipeline,
    where rank 0 holds the first stage only, the whole net is described from its config
    (built on the meta device, without memory), then each stage's blocks."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        pipeline = trainer.strategy if isinstance(trainer.strategy, PipelineStrategy) else None
        net = pl_module.net
        if pipeline is not None:
            with torch.device("meta"):
                net = build_net(pl_module.hparams.net)
        lines = summary_lines(net)
        plan = getattr(pl_module, "net_plan", None)
        if plan is not None and plan.blocks is not None:
            blocks = plan.block_container(net)
            if plan.blocks_found:  # the user may want to name others: say which were taken
                lines.append(f"  blocks (found): {plan.blocks}, {len(blocks)}")
        if pipeline is not None:
            ranks = pipeline.layout.pipeline_parallel_size
            lines += stage_lines(len(blocks), ranks, pipeline.options, plan)
        for line in lines:
            log.info(line)
