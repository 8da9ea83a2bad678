"""In-memory datasets indexed by a whole batch of indices at once (no per-sample collate)."""

import torch
from torch.utils.data import Dataset

from scaletrain.conventions import IGNORE_INDEX, PAD_INDEX


class BatchIndexedTensors(Dataset):
    """Pairs of ``(inputs, targets)`` tensors; ``dataset[list_of_indices]`` returns a batch.

    Padding indices (``PAD_INDEX``) give a real input row and the target ``IGNORE_INDEX``,
    so padded samples flow through the net but count in no loss or metric. With ``dtype``,
    the tensors are kept compact (bytes of text: uint8) and each batch is converted.
    """

    def __init__(
        self, inputs: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype | None = None
    ) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        self.inputs = inputs
        self.targets = targets
        self.dtype = dtype

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        padded = index == PAD_INDEX
        index = index.masked_fill(padded, 0)
        inputs, targets = self.inputs[index], self.targets[index]
        if self.dtype is not None:
            inputs, targets = inputs.to(self.dtype), targets.to(self.dtype)
        targets = targets.masked_fill(padded.view(-1, *([1] * (targets.dim() - 1))), IGNORE_INDEX)
        return inputs, targets
