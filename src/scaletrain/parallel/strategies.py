"""The ``strategy`` config group, turned into what Lightning's Trainer accepts.

- ``auto``: one process.
- ``ddp``: Lightning's DDP; every rank holds the whole model and averages gradients.
- ``fsdp``: FSDP2 through Lightning's ModelParallelStrategy; parameters, gradients and
  optimizer state sharded over all ranks; distributed checkpoints.
- ``model_sharded``: tensor parallel inside groups of ``tensor_parallel_size`` ranks,
  combined with FSDP2 across those groups.
- ``pipeline``: the net's blocks cut into ``pipeline_parallel_size`` stages, each stage
  sharded and split as under ``model_sharded`` (see ``scaletrain.parallel.pipeline``).

The sharded ones share one device mesh of three dimensions, pipeline x data x tensor
parallel (``scaletrain.parallel.layout``), of size 1 where a strategy does not use one.
"""

from lightning.pytorch.strategies import DDPStrategy, Strategy
from omegaconf import DictConfig

from scaletrain.errors import ConfigError
from scaletrain.parallel.apply import FSDPOptions
from scaletrain.parallel.layout import STRATEGIES, ParallelLayout
from scaletrain.parallel.pipeline import PipelineOptions, stages_per_rank
from scaletrain.parallel.pipeline_strategy import PipelineStrategy
from scaletrain.parallel.strategy import ShardedStrategy


def build_strategy(
    cfg: DictConfig, layout: ParallelLayout
) -> tuple[str | Strategy, FSDPOptions | None]:
    """The Lightning strategy for ``cfg`` (the strategy group) laid out as ``layout`` and,
    for the sharded ones, the FSDP2 options the LightningModule applies in
    ``configure_model``."""
    if cfg.name not in STRATEGIES:
        raise ConfigError(f"strategy.name={cfg.name}: unknown; valid: {', '.join(STRATEGIES)}")
    if cfg.name == "auto":
        return "auto", None
    if cfg.name == "ddp":
        return DDPStrategy(find_unused_parameters=cfg.find_unused_parameters), None
    if cfg.name == "pipeline":
        strategy: Strategy = PipelineStrategy(layout, pipeline_options(cfg))
    else:
        strategy = ShardedStrategy(layout, save_distributed_checkpoint=cfg.distributed_checkpoint)
    fsdp = FSDPOptions(
        reshard_after_forward=cfg.reshard_after_forward,
        param_dtype=cfg.mixed_precision,
        cpu_offload=cfg.cpu_offload,
        # a pipeline's checkpoints are always distributed, which a plain stage reads
        on_one_rank=cfg.name != "pipeline",
    )
    return strategy, fsdp


def pipeline_options(cfg: DictConfig) -> PipelineOptions:
    """How ``strategy=pipeline`` cuts the net and schedules microbatches."""
    blocks, per_rank = cfg.get("stage_blocks"), cfg.get("stages_per_rank")
    return PipelineOptions(
        schedule=cfg.pipeline_schedule,
        microbatches=cfg.microbatches,
        stage_blocks=None if blocks is None else tuple(blocks),
        stages_per_rank=stages_per_rank(cfg.pipeline_schedule, per_rank),
    )
