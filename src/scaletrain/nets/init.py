"""Initial weights that do not depend on how the net is laid out.

A parameter's initial value is defined block by block: its elements, in row-major order,
are cut into blocks of ``BLOCK`` elements, and block ``k`` of parameter ``name`` draws
from a generator of its own, seeded by the run's seed, the name and ``k``; never from
the global random stream. Any part of a parameter can therefore be computed without the
rest: one process building the whole net and each rank of a sharded run computing only
the rows it holds (see ``scaletrain.parallel.materialize``) get the same values, and no
rank needs more than one block besides its shards.

A net that starts from saved weights (a ``pretrained_weights`` attribute, see
``scaletrain.nets.weights``) takes each parameter those files hold from them instead,
read whole or, by ``scaletrain.parallel.materialize``, just the rows a rank holds.

How a block is drawn (every element independently, by a rule that depends only on the
parameter) comes, first, from the net's own ``init_parameter(name, value, generator)``
where it has one; else from :func:`standard_rule`, PyTorch's own default distribution for
the standard layers (linear, convolution, embedding, normalization). A parameter that no
rule covers takes its module's ``reset_parameters`` (run on a copy of the module, the
global random stream seeded by the run's seed and the module's name), computed whole;
and where its module has none, the value its constructor gave (nets built whole only).
"""

import copy
import hashlib
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

BLOCK = 1 << 18  # elements drawn from one generator: 1 MiB of fp32

# Draws a block: (block values to fill, its generator, the block's first element's index)
Rule = Callable[[torch.Tensor, torch.Generator, int], None]

# The layers whose own reset_parameters draws uniform within 1/sqrt(fan_in).
LINEAR = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)
NORMS = (
    nn.LayerNorm,
    nn.RMSNorm,
    nn.GroupNorm,
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    nn.InstanceNorm1d,
    nn.InstanceNorm2d,
    nn.InstanceNorm3d,
)


def seed_of(seed: int, *names: object) -> int:
    """A 32-bit seed for ``names`` under the run's ``seed`` (torch's CPU generator keeps 32
    bits of a seed: everything is hashed into 32)."""
    key = "/".join(str(part) for part in (seed, *names))
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")


def block_generator(seed: int, name: str, block: int) -> torch.Generator:
    """The generator of block ``block`` of parameter ``name`` (its fully qualified name)."""
    return torch.Generator().manual_seed(seed_of(seed, name, block))


def uniform_rule(bound: float) -> Rule:
    return lambda value, generator, start: nn.init.uniform_(
        value, -bound, bound, generator=generator
    )


def embedding_rule(module: nn.Embedding) -> Rule:
    """N(0, 1), the padding row (where there is one) zero."""

    def draw(value: torch.Tensor, generator: torch.Generator, start: int) -> None:
        nn.init.normal_(value, generator=generator)
        if module.padding_idx is not None:
            row = module.padding_idx % module.num_embeddings * module.embedding_dim
            first, last = max(row, start), min(row + module.embedding_dim, start + value.numel())
            if first < last:
                value[first - start : last - start] = 0

    return draw


def standard_rule(module: nn.Module, attribute: str) -> Rule | None:
    """PyTorch's default distribution for parameter ``attribute`` of a standard layer, or
    None where ``module`` is not one: linear and convolution layers uniform within
    1/sqrt(fan_in) (weights: Kaiming uniform with a=sqrt(5), the same bound), embeddings
    N(0, 1), normalization scales 1 and shifts 0."""
    if isinstance(module, LINEAR) and attribute in ("weight", "bias"):
        weight = module.weight
        fan_in = weight.shape[1] * math.prod(weight.shape[2:])
        return uniform_rule(1 / math.sqrt(fan_in) if fan_in else 0.0)
    if isinstance(module, nn.Embedding) and attribute == "weight":
        return embedding_rule(module)
    if isinstance(module, NORMS) and attribute in ("weight", "bias"):
        fill = 1.0 if attribute == "weight" else 0.0
        return lambda value, generator, start: nn.init.constant_(value, fill)
    return None


def owner(net: nn.Module, name: str) -> tuple[str, nn.Module, str]:
    """The module that holds parameter ``name``: its name, itself, the attribute."""
    module_name, _, attribute = name.rpartition(".")
    return module_name, net.get_submodule(module_name), attribute


def rule_for(net: nn.Module, name: str) -> Rule | None:
    """How the blocks of parameter ``name`` are drawn; None where no rule covers it."""
    own = getattr(net, "init_parameter", None)
    if callable(own):
        return lambda value, generator, start: own(name, value, generator)
    _, module, attribute = owner(net, name)
    return standard_rule(module, attribute)


def saved_weights(net: nn.Module) -> Any:
    """The saved weights ``net`` starts from (a ``WeightFiles``), or None."""
    return getattr(net, "pretrained_weights", None)


def is_saved(net: nn.Module, name: str) -> bool:
    weights = saved_weights(net)
    return weights is not None and name in weights


def uncovered(net: nn.Module) -> list[str]:
    """The parameters of ``net`` that neither saved weights nor a rule cover."""
    return [
        name
        for name, _ in net.named_parameters()
        if not is_saved(net, name) and rule_for(net, name) is None
    ]


def resettable(net: nn.Module, name: str) -> bool:
    return callable(getattr(owner(net, name)[1], "reset_parameters", None))


def fill_flat_range(
    net: nn.Module, name: str, seed: int, total: int, out: torch.Tensor, start: int
) -> None:
    """Fill ``out`` (1-D) with elements ``start`` to ``start + len(out)`` of the initial
    value of parameter ``name`` (``total`` elements, one that a rule covers), flattened in
    row-major order. Each block is drawn whole, as every layout draws it (a draw's last
    values can depend on its length), and the part of it that ``out`` covers is kept."""
    rule = rule_for(net, name)
    end = start + out.numel()
    scratch = torch.empty(min(BLOCK, total), dtype=out.dtype)
    for block in range(start // BLOCK, -(-end // BLOCK)):
        offset = block * BLOCK
        drawn = scratch[: min(BLOCK, total - offset)]
        rule(drawn, block_generator(seed, name, block), offset)
        first, last = max(start, offset), min(end, offset + drawn.numel())
        out[first - start : last - start] = drawn[first - offset : last - offset]


def reset_value(net: nn.Module, name: str, seed: int) -> torch.Tensor:
    """The initial value of parameter ``name`` by its module's ``reset_parameters``, run on
    a copy of the module (on the CPU, wherever the net is) with the global random stream
    seeded by the run's seed and the module's name, then restored."""
    module_name, module, attribute = owner(net, name)
    copied = copy.deepcopy(module).to_empty(device="cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_of(seed, module_name))
        copied.reset_parameters()
    return getattr(copied, attribute).detach()


def initial_value(net: nn.Module, name: str, seed: int, out: torch.Tensor) -> torch.Tensor:
    """Fill ``out`` (the parameter's full shape, contiguous) with its initial value."""
    if is_saved(net, name):
        out.copy_(saved_weights(net).read(name, out.shape))
    elif rule_for(net, name) is None:
        out.copy_(reset_value(net, name, seed))
    else:
        fill_flat_range(net, name, seed, out.numel(), out.view(-1), 0)
    return out


@torch.no_grad()
def initialize(net: nn.Module, seed: int) -> nn.Module:
    """Set every parameter of a net that holds whole parameters to its initial value (one
    that no rule covers and whose module cannot reset it keeps its constructor's value)."""
    for name, param in net.named_parameters():
        if is_saved(net, name) or rule_for(net, name) is not None or resettable(net, name):
            initial_value(net, name, seed, param.data)
    return net
