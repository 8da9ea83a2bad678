"""Nets written without scaletrain in mind, as a user brings them: plain nn.Modules with
no method for scaletrain, trained by naming them in ``model.net._target_``."""

import torch
from torch import nn


class Scale(nn.Module):
    """A module of the user's own: a parameter that no standard layer's rule covers, set
    by its own reset_parameters."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, 0.5, 1.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class LayerStack(nn.Module):
    """A ``Sequential`` named ``layers`` (features -> width -> width -> classes), then a
    per-class scale."""

    def __init__(self, num_features: int = 64, width: int = 128, num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(num_features, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, num_classes),
        )
        self.scale = Scale(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale(self.layers(x.flatten(1)))


class Gain(nn.Module):
    """A parameter set by its constructor alone: no rule, no reset_parameters."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.randn(dim) * 0.1 + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class GainedStack(LayerStack):
    """:class:`LayerStack` with a :class:`Gain` at its end."""

    def __init__(self, num_features: int = 64, width: int = 128, num_classes: int = 10) -> None:
        super().__init__(num_features, width, num_classes)
        self.gain = Gain(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gain(super().forward(x))


class OuterResidual(nn.Module):
    """Residual connections around its blocks, in its forward: a pipeline stage's output
    (its last block's) would not be all the next stage needs."""

    def __init__(self, num_features: int = 64, width: int = 32, num_classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Linear(num_features, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        self.head = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x.flatten(1))
        for layer in self.layers:
            x = x + torch.relu(layer(x))
        return self.head(x)
