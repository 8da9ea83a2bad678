"""A user's own data module, written as Lightning's documentation writes one (no scaletrain
base class, a plain ``DataLoader`` with ``shuffle=True``), and a callback that records
which samples each rank trained on.

Every sample's first input feature is its index in its split. Given on the command line
as ``~data '+data={_target_: tests.user_data.IndexedData}'`` (with the MLP's sizes,
:data:`MODEL_SIZES`) and
``+callbacks.indices={_target_: tests.user_data.RecordTrainedIndices, path: <file>}``.
"""

import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

NUM_FEATURES = 64
NUM_CLASSES = 10
# The default model (mlp) reads its sizes from data.num_features and data.num_classes,
# which a plain data module does not take: they are given to the model instead.
MODEL_SIZES = [
    f"model.net.input_dim={NUM_FEATURES}",
    f"model.net.num_classes={NUM_CLASSES}",
    f"model.num_classes={NUM_CLASSES}",
]


def indexed_samples(size: int, seed: int) -> TensorDataset:
    """``size`` random samples with random labels; feature 0 holds the sample's index."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(size, NUM_FEATURES, generator=generator)
    inputs[:, 0] = torch.arange(size)
    labels = torch.randint(NUM_CLASSES, (size,), generator=generator)
    return TensorDataset(inputs, labels)


class IndexedData(L.LightningDataModule):
    def __init__(self, batch_size: int = 8, train_size: int = 101) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.train_size = train_size

    def setup(self, stage: str) -> None:
        self.train = indexed_samples(self.train_size, seed=0)
        self.val = indexed_samples(30, seed=1)
        self.test = indexed_samples(30, seed=2)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test, batch_size=self.batch_size)


class RecordTrainedIndices(Callback):
    """Writes ``<path>.rank<N>`` when training ends: JSON, for every epoch, the indices of
    the training samples rank N trained on, in order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.epochs: dict[int, list[int]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        inputs, _ = batch
        indices = inputs[:, 0].long().tolist()
        self.epochs.setdefault(trainer.current_epoch, []).extend(indices)

    def on_train_end(self, trainer, pl_module) -> None:
        Path(f"{self.path}.rank{trainer.global_rank}").write_text(json.dumps(self.epochs))
