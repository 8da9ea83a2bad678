"""The parallel layout of a run, described in one place.

The world's processes (``trainer.devices`` x ``trainer.num_nodes``) form a grid:
``pipeline x data x tensor``, the last dimension varying fastest. Ranks of one
tensor-parallel group split every layer and see the same batch; the data-parallel
replicas (or FSDP shards) each see their own slice of every global batch; ranks of one
pipeline (one per stage, same data and tensor coordinates) hold consecutive parts of the
net and see the same batch, which flows through them in microbatches.

The preflight checks a layout with :meth:`ParallelLayout.problems`, the strategy builder
sizes its device mesh from it, and while a run trains :func:`data_parallel_rank` tells
the sampler and the throughput callback which data-parallel slice this rank holds.
"""

from dataclasses import dataclass

import torch
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator
from lightning.pytorch.strategies import Strategy
from omegaconf import DictConfig, ListConfig, OmegaConf

STRATEGIES = ("auto", "ddp", "fsdp", "model_sharded", "pipeline")
# strategies whose checkpoints are sharded directories
SHARDED = ("fsdp", "model_sharded", "pipeline")
SPLITS_LAYERS = ("model_sharded", "pipeline")  # the strategies with tensor parallelism
MESH_DIMENSIONS = ("pipeline", "data_parallel", "tensor_parallel")


def divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def accelerator_type(trainer_cfg: DictConfig) -> str:
    """``cpu`` or ``gpu``: what ``trainer.accelerator`` (``auto`` included) resolves to."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("auto", "cuda", "gpu"):
        return "gpu" if torch.cuda.is_available() or accelerator != "auto" else "cpu"
    return accelerator


def world_size(trainer_cfg: DictConfig) -> int:
    """Processes the Trainer will run: ``trainer.devices`` per node, parsed by Lightning's
    own accelerator (``auto``, ``-1``, ``"2"``, ``[0, 1]``), times ``trainer.num_nodes``.
    Raises Lightning's MisconfigurationException for devices it would refuse."""
    accelerator = CUDAAccelerator if accelerator_type(trainer_cfg) == "gpu" else CPUAccelerator
    devices = trainer_cfg.get("devices", "auto")
    if isinstance(devices, ListConfig):
        devices = OmegaConf.to_container(devices)
    if devices == "auto":
        per_node = accelerator.auto_device_count()
    else:
        parsed = accelerator.parse_devices(devices)
        per_node = len(parsed) if isinstance(parsed, list) else int(parsed)
    return per_node * int(trainer_cfg.get("num_nodes", 1))


@dataclass(frozen=True)
class ParallelLayout:
    """How ``world_size`` processes divide into pipeline x data x tensor parallel."""

    world_size: int
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    # Each data-parallel rank's batch is cut into this many pieces for the pipeline.
    microbatches: int = 1

    @classmethod
    def of(cls, strategy_cfg: DictConfig, world: int) -> "ParallelLayout":
        """The layout a ``strategy`` config asks for on ``world`` processes."""
        return cls(
            world_size=world,
            tensor_parallel_size=int(strategy_cfg.get("tensor_parallel_size", 1)),
            pipeline_parallel_size=int(strategy_cfg.get("pipeline_parallel_size", 1)),
            microbatches=int(strategy_cfg.get("microbatches", 1)),
        )

    @property
    def mesh_shape(self) -> tuple[int, int, int]:
        """Sizes of the device mesh's dimensions, :data:`MESH_DIMENSIONS`."""
        return self.pipeline_parallel_size, self.data_parallel_size, self.tensor_parallel_size

    @property
    def model_parallel_size(self) -> int:
        """Ranks that together hold one copy of the model."""
        return self.tensor_parallel_size * self.pipeline_parallel_size

    @property
    def data_parallel_size(self) -> int:
        """How many model replicas (or FSDP shards) the world holds."""
        return self.world_size // self.model_parallel_size

    def problems(
        self, strategy: str, global_batch_size: object, devices: str = "trainer.devices"
    ) -> list[str]:
        """What does not fit: the strategy and the world size, the parallel degrees and
        the world size, the global batch and the data-parallel size (``devices``: the
        setting that asked for the processes, as the problem names it)."""
        world, tp, pp = self.world_size, self.tensor_parallel_size, self.pipeline_parallel_size
        if strategy not in STRATEGIES:
            return [f"strategy.name={strategy}: unknown; valid: {', '.join(STRATEGIES)}"]
        if strategy == "auto" and world > 1:
            return [
                f"{devices}: strategy=auto runs one process; use strategy=ddp, fsdp, "
                f"model_sharded or pipeline for {world} processes"
            ]
        if strategy not in SPLITS_LAYERS and tp != 1:
            return [
                f"strategy.tensor_parallel_size={tp}: only model_sharded and pipeline split "
                f"the layers; use one of them or 1"
            ]
        if strategy != "pipeline" and pp != 1:
            return [
                f"strategy.pipeline_parallel_size={pp}: only strategy=pipeline splits the net "
                f"into stages; use it or 1"
            ]
        if tp < 1 or world % tp:
            return [
                f"strategy.tensor_parallel_size={tp}: must divide the world size {world} "
                f"(trainer.devices x trainer.num_nodes); valid: {divisors(world)}"
            ]
        if pp < 1 or world % (pp * tp):
            return [
                f"strategy.pipeline_parallel_size={pp}: pipeline x tensor parallel ({pp} x "
                f"{tp}) must divide the world size {world} (trainer.devices x "
                f"trainer.num_nodes); valid: {divisors(world // tp)}"
            ]
        if self.microbatches < 1:
            return [f"strategy.microbatches={self.microbatches}: must be at least 1"]
        dp, pieces = self.data_parallel_size, self.data_parallel_size * self.microbatches
        if isinstance(global_batch_size, int) and global_batch_size % pieces:
            if self.microbatches == 1:
                return [
                    f"data.batch_size={global_batch_size}: the global batch must divide by "
                    f"the data-parallel size {dp} (world {world} / model parallel {pp * tp})"
                ]
            return [
                f"data.batch_size={global_batch_size}: the global batch must divide by "
                f"data-parallel size x strategy.microbatches ({dp} x {self.microbatches})"
            ]
        return []


def data_parallel_rank(strategy: Strategy | None) -> tuple[int, int]:
    """``(size, rank)`` of the running strategy's data-parallel dimension: (1, 0) for one
    process; ranks of one tensor-parallel group share a data-parallel rank. Read from
    the strategy's ``distributed_sampler_kwargs``, where Lightning's strategies say it."""
    kwargs = getattr(strategy, "distributed_sampler_kwargs", None) if strategy else None
    if not kwargs:
        return 1, 0
    return kwargs["num_replicas"], kwargs["rank"]
