"""Give a net built on the meta device, and already sharded, its initial weights: each
rank allocates only its own shards and fills them with its part of every parameter's
initial value (``scaletrain.nets.init``), so no rank ever holds the whole net and the
full weights equal those of a single process with the same seed.

Where a rank's shard is a range of the parameter's rows (FSDP2's shards, tensor
parallel's column-wise layers and embeddings), it draws just those rows, one block of
the initial value at a time, or reads just those rows from the saved weights the net
starts from. Other shards (tensor parallel's row-wise layers, which split
columns, and FSDP2 over them) are cut from the full value of that one parameter.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from scaletrain.nets.init import fill_flat_range, initial_value, is_saved, saved_weights


def is_on_meta(net: nn.Module) -> bool:
    return any(param.is_meta for param in net.parameters())


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Build modules with their parameters on the meta device (no memory) and their buffers
    where the constructor puts them: buffers such as rotary frequencies are computed once,
    in the constructor, and are not parameters that initialization would set."""
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = type(param)(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = register_on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def held_rows(param: torch.Tensor) -> range | None:
    """The rows of the full parameter that this rank's part of it consists of, where that
    part is a range of rows: every placement is ``Shard(0)`` (chunks of rows, as
    ``torch.chunk`` cuts them) or ``Replicate``. None where it is not."""
    if param.dim() == 0:
        return None
    rows = torch.arange(param.shape[0])
    if not isinstance(param, DTensor):
        return range(len(rows))
    coordinate = param.device_mesh.get_coordinate()
    for mesh_dim, placement in enumerate(param.placements):
        if placement.is_replicate():
            continue
        # exactly Shard(0): FSDP2 over tensor parallel uses a strided kind of Shard
        if type(placement) is not Shard or placement.dim != 0:
            return None
        chunks = rows.chunk(param.device_mesh.size(mesh_dim))
        rows = chunks[coordinate[mesh_dim]] if coordinate[mesh_dim] < len(chunks) else rows[:0]
    return range(int(rows[0]), int(rows[-1]) + 1) if len(rows) else range(0)


@torch.no_grad()
def materialize(
    net: nn.Module, device: torch.device, seed: int, computed: dict[str, torch.Tensor]
) -> None:
    """Allocate ``net``'s parameters (local shards where they are DTensors) on ``device``
    and set them to their initial values; ``computed``: the whole initial values of the
    parameters that no rule covers, computed before the net was sharded."""
    buffers = {name: buffer.clone() for name, buffer in net.named_buffers() if not buffer.is_meta}
    net.to_empty(device=device)
    for name, buffer in net.named_buffers():  # to_empty left them uninitialized
        if name in buffers:
            buffer.copy_(buffers[name])
    scratch: dict[torch.dtype, torch.Tensor] = {}
    for name, param in net.named_parameters():
        local = param.to_local() if isinstance(param, DTensor) else param.data
        rows = held_rows(param)
        if name in computed:
            value = computed[name].to(param.dtype)
        elif rows is not None and is_saved(net, name):
            local.copy_(saved_weights(net).read(name, param.shape, rows))
            continue
        elif rows is not None and local.is_contiguous():
            width = param.numel() // param.shape[0] if param.shape[0] else 0
            fill_flat_range(net, name, seed, param.numel(), local.view(-1), rows.start * width)
            continue
        else:
            buffer = scratch.get(param.dtype)
            if buffer is None or buffer.numel() < param.numel():
                buffer = scratch[param.dtype] = torch.empty(param.numel(), dtype=param.dtype)
            value = initial_value(net, name, seed, buffer[: param.numel()].view(param.shape))
        if not isinstance(param, DTensor):
            local.copy_(value)
            continue
        # src_data_rank=None: every rank slices the value it computed itself, no traffic
        mine = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
        local.copy_(mine.to_local())
