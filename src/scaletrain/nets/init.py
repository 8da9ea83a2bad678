"""Initial weights that do not depend on how the net is laid out.

A parameter's initial value is defined block by block: its elements, in row-major order,
are cut into blocks of ``BLOCK`` elements, and block ``k`` of parameter ``name`` draws
from a generator of its own, seeded by the run's seed, the name and ``k``; never from
the global random stream. Any part of a parameter can therefore be computed without the
rest: one process building the whole net and each rank of a sharded run computing only
the rows it holds (see ``scaletrain.parallel.materialize``) get the same values, and no
rank needs more than one block besides its shards. Each net says how a block is drawn
(``init_parameter``): every element independently, by a rule that depends only on the
parameter (normal with a fixed deviation, uniform within 1/sqrt(fan_in), ones, zeros).
"""

import hashlib

import torch
from torch import nn

BLOCK = 1 << 18  # elements drawn from one generator: 1 MiB of fp32


def block_generator(seed: int, name: str, block: int) -> torch.Generator:
    """The generator of block ``block`` of parameter ``name`` (its fully qualified name in
    the net). torch's CPU generator keeps 32 bits of a seed: all three are hashed into 32."""
    digest = hashlib.blake2b(f"{seed}/{name}/{block}".encode(), digest_size=4).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


def fill_flat_range(
    net: nn.Module, name: str, seed: int, total: int, out: torch.Tensor, start: int
) -> None:
    """Fill ``out`` (1-D) with elements ``start`` to ``start + len(out)`` of the initial
    value of parameter ``name`` (``total`` elements), flattened in row-major order. Each
    block is drawn whole, as every layout draws it (a draw's last values can depend on its
    length), and the part of it that ``out`` covers is kept."""
    end = start + out.numel()
    scratch = torch.empty(min(BLOCK, total), dtype=out.dtype)
    for block in range(start // BLOCK, -(-end // BLOCK)):
        offset = block * BLOCK
        drawn = scratch[: min(BLOCK, total - offset)]
        net.init_parameter(name, drawn, block_generator(seed, name, block))
        first, last = max(start, offset), min(end, offset + drawn.numel())
        out[first - start : last - start] = drawn[first - offset : last - offset]


def initial_value(net: nn.Module, name: str, seed: int, out: torch.Tensor) -> torch.Tensor:
    """Fill ``out`` (the parameter's full shape, contiguous) with its initial value."""
    fill_flat_range(net, name, seed, out.numel(), out.view(-1), 0)
    return out


@torch.no_grad()
def initialize(net: nn.Module, seed: int) -> nn.Module:
    """Set every parameter of a net that holds whole parameters to its initial value."""
    for name, param in net.named_parameters():
        initial_value(net, name, seed, param.data)
    return net
