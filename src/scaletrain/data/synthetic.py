"""Random inputs and labels of configurable size, for smoke tests and benchmarks."""

import torch

from scaletrain.data.base import ShardedDataModule
from scaletrain.data.datasets import BatchIndexedTensors


class SyntheticDataModule(ShardedDataModule):
    """Gaussian inputs of ``num_features`` values with uniform labels in ``[0, num_classes)``."""

    def __init__(
        self,
        batch_size: int = 64,
        num_samples: dict[str, int] | None = None,
        num_features: int = 32,
        num_classes: int = 10,
        data_seed: int = 0,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, shuffle=shuffle)
        self.num_samples = dict(num_samples or {"train": 1024, "val": 256, "test": 256})
        self.num_features = num_features
        self.num_classes = num_classes
        self.data_seed = data_seed

    def load_splits(self) -> dict[str, BatchIndexedTensors]:
        generator = torch.Generator().manual_seed(self.data_seed)
        splits = {}
        for name in ("train", "val", "test"):
            size = self.num_samples[name]
            inputs = torch.randn(size, self.num_features, generator=generator)
            targets = torch.randint(self.num_classes, (size,), generator=generator)
            splits[name] = BatchIndexedTensors(inputs, targets)
        return splits
