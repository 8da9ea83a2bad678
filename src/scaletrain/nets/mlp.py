"""The seed's multilayer perceptron: input -> hidden ReLU layers -> class logits."""

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """A stack of ``Linear -> ReLU`` blocks followed by a linear classifier head.

    Inputs of any shape ``(batch, ...)`` are flattened, so 8x8 or 28x28 images work as-is.
    """

    def __init__(self, input_dim: int, hidden_dims: Sequence[int], num_classes: int) -> None:
        super().__init__()
        widths = [input_dim, *hidden_dims]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(fan_in, fan_out), nn.ReLU())
            for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True)
        )
        self.head = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for block in self.blocks:
            x = block(x)
        return self.head(x)
