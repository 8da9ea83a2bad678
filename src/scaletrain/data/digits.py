"""The handwritten digits set that ships inside scikit-learn: 1,797 8x8 images, no download."""

import torch
from sklearn.datasets import load_digits

from scaletrain.data.base import ShardedDataModule
from scaletrain.data.datasets import BatchIndexedTensors
from scaletrain.data.splits import random_split_indices
from scaletrain.errors import check_shape


class DigitsDataModule(ShardedDataModule):
    """Digits scaled to [0, 1]; a fixed random split into train/val/test."""

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        num_features: int = 64,
        num_classes: int = 10,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, shuffle=shuffle)
        check_shape("data.num_features", num_features, 64, "digits")
        check_shape("data.num_classes", num_classes, 10, "digits")
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_seed = split_seed

    def load_splits(self) -> dict[str, BatchIndexedTensors]:
        digits = load_digits()
        inputs = torch.as_tensor(digits.data, dtype=torch.float32) / 16.0
        targets = torch.as_tensor(digits.target, dtype=torch.long)
        parts = random_split_indices(len(inputs), self.fractions, self.split_seed)
        return {name: BatchIndexedTensors(inputs[idx], targets[idx]) for name, idx in parts.items()}
