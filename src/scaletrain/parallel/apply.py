"""Apply parallelism to a plain net, in one fixed order:
tensor parallel -> compile -> activation checkpointing -> FSDP2.

(torchtitan checkpoints before compiling; here the checkpoint wraps the compiled
forward instead, because compiling a checkpointed tensor-parallel block fails in
torch 2.13, while recomputing a compiled forward works everywhere.)

Every step edits the net in place and keeps its parameter names, so checkpoints load
into the plain net whatever combination was used to train it.
"""

import functools
from dataclasses import dataclass

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor.parallel import parallelize_module
from torch.utils.checkpoint import checkpoint

from scaletrain import compat
from scaletrain.parallel.net_plan import NetPlan
from scaletrain.parallel.plans import tensor_parallel_plan

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class FSDPOptions:
    """How FSDP2 shards parameters, gradients and optimizer state over data-parallel ranks."""

    reshard_after_forward: bool = True
    # Parameters cast to this dtype for compute (gradients are still reduced in fp32).
    param_dtype: str | None = None
    cpu_offload: bool = False
    # Shard over a data-parallel mesh of one rank too (see needed()).
    on_one_rank: bool = True

    def needed(self, data_parallel_size: int) -> bool:
        """Whether to apply FSDP2 on a data-parallel mesh of that size. Over one rank it
        shards and synchronizes nothing, yet its hooks run around every block's forward
        and backward (for each microbatch of a pipeline): it is left off there unless it
        casts or offloads the parameters, or ``on_one_rank`` asks for it (Lightning reads a
        single-file checkpoint into DTensors only)."""
        return (
            data_parallel_size > 1
            or self.on_one_rank
            or self.param_dtype is not None
            or self.cpu_offload
        )

    def kwargs(self) -> dict:
        """Keyword arguments of ``fully_shard`` (without the mesh)."""
        kwargs: dict = {"reshard_after_forward": self.reshard_after_forward}
        if self.param_dtype is not None:
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=DTYPES[self.param_dtype], reduce_dtype=torch.float32
            )
        if self.cpu_offload:
            kwargs["offload_policy"] = CPUOffloadPolicy()
        return kwargs


def checkpoint_activations(module: nn.Module) -> None:
    """Recompute ``module``'s activations in the backward pass instead of storing them.

    The forward is wrapped on the instance (not by a wrapper module), so parameter
    names, and with them checkpoints, stay unchanged.
    """
    module.forward = functools.partial(checkpoint, module.forward, use_reentrant=False)


def parallelize(
    net: nn.Module,
    plan: NetPlan,
    mesh: DeviceMesh | None,
    fsdp: FSDPOptions | None,
    activation_checkpointing: bool = False,
    compile: bool = False,
) -> None:
    """Parallelize ``net`` in place as ``plan`` says: its blocks are the units of
    checkpointing, compilation and sharding. ``mesh`` has dimensions ``data_parallel`` and
    ``tensor_parallel`` (from Lightning's ModelParallelStrategy), or is None for
    single-device and DDP runs."""
    if mesh is not None and mesh["tensor_parallel"].size() > 1:
        parallelize_module(net, mesh["tensor_parallel"], tensor_parallel_plan(net, plan))
        # A gradient norm is partial over both mesh dimensions; with the flattened mesh
        # registered, DTensor reduces it in one all-reduce instead of two in sequence
        # (which it warns may differ between ranks in the last bits).
        compat.flatten_mesh(mesh, ("data_parallel", "tensor_parallel"))
    units = list(plan.units(net))
    for block in units:
        if compile:
            # Compiling the forward (not the module) keeps the parameter names.
            block.forward = torch.compile(block.forward)
        if activation_checkpointing:
            checkpoint_activations(block)
    if mesh is not None and fsdp is not None and fsdp.needed(mesh["data_parallel"].size()):
        # Without sharding (or replication) over the data-parallel mesh nothing would
        # synchronize gradients under ModelParallelStrategy.
        for block in units:
            fully_shard(block, mesh=mesh["data_parallel"], **fsdp.kwargs())
        fully_shard(net, mesh=mesh["data_parallel"], **fsdp.kwargs())
