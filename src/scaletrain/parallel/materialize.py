"""Give a net built on the meta device, and already sharded, its initial weights: each
rank allocates only its own shards and fills them with its slice of every parameter's
initial value (``scaletrain.nets.init``), so no rank ever holds the whole net and the
full weights equal those of a single process with the same seed.

A rank computes one full parameter at a time and keeps its slice: its peak during
initialization is its shards plus the largest single parameter.
"""

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor

from scaletrain.nets.init import initial_values


def is_on_meta(net: nn.Module) -> bool:
    return any(param.is_meta for param in net.parameters())


@torch.no_grad()
def materialize(net: nn.Module, device: torch.device, seed: int) -> None:
    """Allocate ``net``'s parameters (local shards where they are DTensors) on ``device``
    and set them to their initial values."""
    net.to_empty(device=device)
    for name, value in initial_values(net, seed):
        param = net.get_parameter(name)
        if isinstance(param, DTensor):
            # src_data_rank=None: every rank slices the value it computed itself, no traffic
            mine = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(mine.to_local())
        else:
            param.copy_(value)
