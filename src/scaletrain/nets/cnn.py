"""A small convolutional classifier for square one-channel images (8x8 digits, 28x28 MNIST):
a stem convolution, residual convolution blocks, 2x2 max pooling and a linear head."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection around them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.first = nn.Conv2d(channels, channels, 3, padding=1)
        self.second = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.second(F.relu(self.first(x))))


class CNN(nn.Module):
    """Flattened inputs of ``input_dim`` pixels (a square image) -> ``num_classes`` logits."""

    def __init__(
        self, input_dim: int, num_classes: int, channels: int = 16, num_blocks: int = 2
    ) -> None:
        super().__init__()
        self.side = math.isqrt(input_dim)
        if self.side * self.side != input_dim:
            raise ValueError(f"model.net.input_dim={input_dim}: not a square image's pixels")
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ConvBlock(channels) for _ in range(num_blocks))
        self.head = nn.Linear(channels * (self.side // 2) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x.view(-1, 1, self.side, self.side)))
        for block in self.blocks:
            x = block(x)
        return self.head(F.max_pool2d(x, 2).flatten(1))
