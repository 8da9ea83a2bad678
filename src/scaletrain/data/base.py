"""The shared DataModule: split once, then serve each rank its slice of every global batch."""

from abc import ABC, abstractmethod
from collections.abc import Callable

import lightning as L
from torch.utils.data import DataLoader

from scaletrain import compat
from scaletrain.data.datasets import BatchIndexedTensors
from scaletrain.data.sampler import GlobalBatchSampler
from scaletrain.parallel.layout import data_parallel_rank


class ResumableDataLoader(DataLoader):
    """A training loader whose position inside an epoch is saved in checkpoints.

    Lightning stores ``state_dict()`` with every checkpoint and, on a resume, hands it to
    ``load_state_dict()``: the epoch then continues after the batches already trained on
    instead of starting over, so no sample is skipped or seen twice.

    torchdata's ``StatefulDataLoader`` does the same for any sampler, but it counts the
    batches the loader has handed out (Lightning's loop fetches one ahead of the batch it
    trains on) and, for a sampler without state, fast-forwards by iterating it. Here the
    count is the batches the Trainer has trained on, and the global-batch sampler jumps to
    the next one by index; no extra dependency is needed.
    """

    def __init__(self, *args, trained_batches: Callable[[], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trained_batches = trained_batches

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self.trained_batches()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(state["epoch"])
        self.sampler.skip_batches = state["batches"]


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

    def trained_batches(self) -> int:
        """Batches of the current epoch the Trainer has trained on so far."""
        return compat.batches_trained_this_epoch(self.trainer)

    def _loader(self, split: str, train: bool) -> DataLoader:
        num_replicas, rank = data_parallel_rank(self.trainer.strategy if self.trainer else None)
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
        loader_type = ResumableDataLoader if train else DataLoader
        extra = {"trained_batches": self.trained_batches} if train else {}
        return loader_type(
            self.splits[split],
            sampler=sampler,
            batch_size=None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            **extra,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
