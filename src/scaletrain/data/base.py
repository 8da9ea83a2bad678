"""The shared DataModule: split once, then serve each rank its slice of every global batch."""

from abc import ABC, abstractmethod

import lightning as L
from torch.utils.data import DataLoader

from scaletrain.data.datasets import BatchIndexedTensors
from scaletrain.data.sampler import GlobalBatchSampler


class ShardedDataModule(L.LightningDataModule, ABC):
    """Base for in-memory datasets; subclasses only implement :meth:`load_splits`.

    ``batch_size`` is the global batch: each data-parallel rank receives
    ``batch_size / data_parallel_size`` samples per step. Ranks of one tensor-parallel
    group share a data-parallel rank, so they receive the same batch.
    """

    def __init__(
        self, batch_size: int, num_workers: int = 0, seed: int = 0, shuffle: bool = True
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.num_workers = num_workers
        self.seed = seed
        self.splits: dict[str, BatchIndexedTensors] = {}

    @abstractmethod
    def load_splits(self) -> dict[str, BatchIndexedTensors]:
        """Return the ``train``, ``val`` and ``test`` datasets, identically on every rank."""

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load_splits()

    def data_parallel_rank(self) -> tuple[int, int]:
        """``(num_replicas, rank)`` over the data-parallel dimension of the running strategy."""
        trainer = self.trainer
        kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) if trainer else None
        if not kwargs:
            return 1, 0
        return kwargs["num_replicas"], kwargs["rank"]

    def _loader(self, split: str, train: bool) -> DataLoader:
        num_replicas, rank = self.data_parallel_rank()
        sampler = GlobalBatchSampler(
            num_samples=len(self.splits[split]),
            global_batch_size=self.batch_size,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=train and self.shuffle,
            drop_last=train,
            seed=self.seed,
        )
        # batch_size=None: the sampler yields whole batches of indices, which the dataset
        # gathers in one indexing operation.
        return DataLoader(
            self.splits[split],
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
