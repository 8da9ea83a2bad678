"""Tensor-parallel plans: for each net, which linear layers split their outputs
(column-wise) and which split their inputs (row-wise).

A column-wise layer keeps its slice of the features local; the row-wise layer that
follows consumes that slice and sums the partial results across the tensor-parallel
group, so each pair costs one all-reduce in the forward pass and one in the backward.
"""

from collections.abc import Callable

import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, distribute_module
from torch.distributed.tensor.parallel import ColwiseParallel, ParallelStyle, RowwiseParallel

from scaletrain import compat
from scaletrain.nets.gpt import GPT
from scaletrain.nets.mlp import MLP

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


def block_indices(net: nn.Module) -> list[str]:
    """The indices of the blocks ``net`` holds: all of them, or a pipeline stage's."""
    return [name for name, _ in net.blocks.named_children()]


def mlp_plan(net: MLP) -> Plan:
    """Linear layers in pairs: column-wise, then row-wise; an unpaired last layer stays whole."""
    names = [f"blocks.{i}.0" for i in block_indices(net)]
    if net.head is not None:  # not on a pipeline stage before the last
        names.append("head")
    plan: Plan = {}
    for first, second in zip(names[0::2], names[1::2], strict=False):
        plan[first] = ColwiseParallel()
        plan[second] = RowwiseParallel()
    if len(names) % 2:
        plan[names[-1]] = ReplicateParallel()
    return plan


def gpt_plan(net: GPT) -> Plan:
    """Attention heads and the feed-forward hidden units split across devices (Megatron
    style); the token embedding splits its vocabulary rows; the LM head splits the
    vocabulary and gathers the logits; norms and position embeddings stay whole."""
    plan: Plan = {}
    if net.token_embedding is not None:  # not on a later pipeline stage
        plan["token_embedding"] = RowwiseParallel(input_layouts=Replicate())
        plan["position_embedding"] = ReplicateParallel()
    if net.lm_head is not None:  # not on an earlier pipeline stage
        plan["norm"] = ReplicateParallel()
        plan["lm_head"] = ColwiseParallel(output_layouts=Replicate())
    for i in block_indices(net):
        prefix = f"blocks.{i}"
        plan.update(
            {
                f"{prefix}.attention_norm": ReplicateParallel(),
                f"{prefix}.mlp_norm": ReplicateParallel(),
                f"{prefix}.attention.q": ColwiseParallel(),
                f"{prefix}.attention.k": ColwiseParallel(),
                f"{prefix}.attention.v": ColwiseParallel(),
                f"{prefix}.attention.out": RowwiseParallel(),
                f"{prefix}.mlp.up": ColwiseParallel(),
                f"{prefix}.mlp.down": RowwiseParallel(),
            }
        )
    return plan


PLANS: dict[type[nn.Module], Callable[[nn.Module], Plan]] = {MLP: mlp_plan, GPT: gpt_plan}


def tensor_parallel_plan(net: nn.Module) -> Plan:
    """The plan for ``net``'s class; raises for a net that has none."""
    for net_type, plan in PLANS.items():
        if isinstance(net, net_type):
            return plan(net)
    raise TypeError(
        f"{type(net).__name__} has no tensor-parallel plan in scaletrain.parallel.plans"
    )


def split_sizes(net_cfg: dict) -> dict[str, int]:
    """The sizes a tensor-parallel degree must divide, by setting name, for a net config."""
    target = net_cfg.get("_target_", "")
    if target.endswith("MLP"):
        widths = list(net_cfg["hidden_dims"])
        # column-wise layers are the 1st, 3rd, ... linear layers: their output widths split
        return {f"model.net.hidden_dims[{i}]": widths[i] for i in range(0, len(widths), 2)}
    if target.endswith("GPT"):
        return {
            "model.net.num_heads": net_cfg["num_heads"],
            "model.net.dim * model.net.mlp_ratio": net_cfg["dim"] * net_cfg.get("mlp_ratio", 4),
            "model.net.vocab_size": net_cfg["vocab_size"],
        }
    return {}
