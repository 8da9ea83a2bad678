"""Tensor-parallel plans: which layers split their outputs (column-wise) and which split
their inputs (row-wise), from the net's declared patterns (``scaletrain.parallel.net_plan``).

A column-wise layer keeps its slice of the features local; the row-wise layer that
follows consumes that slice and sums the partial results across the tensor-parallel
group, so each pair costs one all-reduce in the forward pass and one in the backward.
"""

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, distribute_module
from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel

from scaletrain import compat
from scaletrain.parallel.net_plan import NetPlan

Plan = dict[str, ParallelStyle]


class ReplicateParallel(compat.CustomParallelStyle):
    """Keep a small module whole on every device of the group, as a replicated DTensor.

    Its inputs and outputs stay plain tensors. Every parameter then lives on the same
    tensor-parallel mesh, which FSDP2 and gradient clipping over all parameters need.
    """

    @staticmethod
    def _replicate_params(name: str, module: nn.Module, mesh: DeviceMesh) -> None:
        for param_name, param in list(module.named_parameters(recurse=False)):
            # Seeded initialization made the values equal on every rank already.
            replicated = DTensor.from_local(param.data, mesh, [Replicate()], run_check=False)
            module.register_parameter(param_name, nn.Parameter(replicated))

    @staticmethod
    def _inputs_to_dtensor(module: nn.Module, inputs: tuple, mesh: DeviceMesh) -> tuple:
        return tuple(
            DTensor.from_local(x, mesh, [Replicate()], run_check=False)
            if isinstance(x, torch.Tensor) and not isinstance(x, DTensor)
            else x
            for x in inputs
        )

    @staticmethod
    def _output_to_local(module: nn.Module, output: DTensor, mesh: DeviceMesh) -> torch.Tensor:
        return output.to_local()

    def apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return distribute_module(
            module,
            device_mesh,
            self._replicate_params,
            self._inputs_to_dtensor,
            self._output_to_local,
        )


def parallel_style(style: str) -> ParallelStyle:
    """torch's tensor-parallel style for a style name of :data:`STYLES`."""
    if style == "colwise":
        return ColwiseParallel()
    if style == "colwise_gather":
        return ColwiseParallel(output_layouts=Replicate())
    if style == "rowwise":
        return RowwiseParallel()
    if style == "embedding":  # the rows it holds are looked up, the partial results summed
        return RowwiseParallel(input_layouts=Replicate())
    return ReplicateParallel()


def tensor_parallel_plan(net: nn.Module, plan: NetPlan) -> Plan:
    """torch's plan for ``net``: each module that holds parameters, by name, with its style."""
    return {name: parallel_style(style) for name, style in plan.tensor_parallel_styles(net).items()}
