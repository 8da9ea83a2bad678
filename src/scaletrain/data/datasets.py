"""In-memory datasets indexed by a whole batch of indices at once (no per-sample collate)."""

import torch
from torch.utils.data import Dataset

from scaletrain.conventions import IGNORE_INDEX, PAD_INDEX


class BatchIndexedTensors(Dataset):
    """Pairs of ``(inputs, targets)`` tensors; ``dataset[list_of_indices]`` returns a batch.

    Padding indices (``PAD_INDEX``) give a real input row and the target ``IGNORE_INDEX``,
    so padded samples flow through the net but count in no loss or metric.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs = inputs
        self.targets = targets

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        padded = index == PAD_INDEX
        index = index.masked_fill(padded, 0)
        targets = self.targets[index].masked_fill(
            padded.view(-1, *([1] * (self.targets.dim() - 1))), IGNORE_INDEX
        )
        return self.inputs[index], targets
