"""A net from its config (``model.net``)."""

from typing import Any

from hydra.utils import instantiate
from torch import nn


def build_net(config: Any) -> nn.Module:
    """Instantiate ``config``, handing the net plain dicts and lists: nets are plain
    PyTorch and pass nested settings on (transformers' configs check their types)."""
    return instantiate(config, _convert_="all")
