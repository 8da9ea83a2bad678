"""Initial weights that do not depend on how the net is laid out.

Every parameter draws its initial value from a generator of its own, seeded by the run's
seed and the parameter's name, never from the global random stream. A full parameter is
therefore the same whether one process builds the whole net or each rank of a sharded
run computes it on the meta-device path (see ``scaletrain.parallel.materialize``); a
rank only keeps its own slice of it. The values follow each net's own rule
(``init_parameter``).
"""

import hashlib
from collections.abc import Iterator

import torch
from torch import nn


def parameter_generator(seed: int, name: str) -> torch.Generator:
    """The generator of parameter ``name`` (its fully qualified name in the net). torch's
    CPU generator keeps 32 bits of a seed: the seed and the name are hashed into 32."""
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=4).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))


def initial_values(net: nn.Module, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, full initial value)`` of each of ``net``'s parameters, one at a time. Each
    value lives in one scratch buffer the size of the largest parameter, valid until the
    next is yielded: allocating and freeing a full tensor per parameter would leave the
    allocator's heap fragmented by tens of MB. (A sharded parameter, a DTensor, has the
    full shape.)"""
    params = list(net.named_parameters())
    sizes: dict[torch.dtype, int] = {}
    for _, param in params:
        sizes[param.dtype] = max(sizes.get(param.dtype, 0), param.numel())
    scratch = {dtype: torch.empty(size, dtype=dtype) for dtype, size in sizes.items()}
    for name, param in params:
        value = scratch[param.dtype][: param.numel()].view(param.shape)
        net.init_parameter(name, value, parameter_generator(seed, name))
        yield name, value


@torch.no_grad()
def initialize(net: nn.Module, seed: int) -> nn.Module:
    """Set every parameter of a net that holds whole parameters to its initial value."""
    for name, value in initial_values(net, seed):
        net.get_parameter(name).copy_(value)
    return net
