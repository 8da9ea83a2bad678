"""Data distribution: every rank gets a disjoint slice of the same global batches."""

import pytest
import torch

from scaletrain.conventions import IGNORE_INDEX, PAD_INDEX
from scaletrain.data.datasets import BatchIndexedTensors
from scaletrain.data.sampler import GlobalBatchSampler


def epoch_batches(num_samples, global_batch, replicas, train, epoch=0):
    """Per step: the concatenation of all ranks' batches, in rank order."""
    per_rank = []
    for rank in range(replicas):
        sampler = GlobalBatchSampler(
            num_samples, global_batch, replicas, rank, shuffle=train, drop_last=train, seed=3
        )
        sampler.set_epoch(epoch)
        per_rank.append(list(sampler))
    return [sum(step, []) for step in zip(*per_rank, strict=True)]


@pytest.mark.parametrize("replicas", [2, 4])
def test_ranks_together_see_the_single_process_global_batches(replicas):
    single = epoch_batches(103, 8, 1, train=True)
    distributed = epoch_batches(103, 8, replicas, train=True)
    assert distributed == single
    assert len(single) == 12  # 103 // 8: the remainder of 7 samples is dropped


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_every_training_sample_is_seen_at_most_once_and_only_the_remainder_is_dropped(replicas):
    seen = [i for step in epoch_batches(103, 8, replicas, train=True) for i in step]
    assert len(seen) == len(set(seen)) == 96


def test_each_epoch_drops_a_different_remainder():
    kept = [set(sum(epoch_batches(103, 8, 2, True, epoch), [])) for epoch in range(3)]
    dropped = [set(range(103)) - k for k in kept]
    assert dropped[0] != dropped[1] != dropped[2]


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_evaluation_sees_every_sample_exactly_once_plus_padding(replicas):
    seen = [i for step in epoch_batches(103, 8, replicas, train=False) for i in step]
    real = [i for i in seen if i != PAD_INDEX]
    assert sorted(real) == list(range(103))
    assert seen.count(PAD_INDEX) == 104 - 103


def test_global_batch_must_divide_by_the_data_parallel_size():
    with pytest.raises(ValueError, match="data.batch_size=10 must be divisible"):
        GlobalBatchSampler(100, 10, num_replicas=4, rank=0)


def test_padded_indices_get_ignored_targets():
    data = BatchIndexedTensors(torch.arange(6.0).view(3, 2), torch.tensor([4, 5, 6]))
    inputs, targets = data[[2, PAD_INDEX]]
    assert targets.tolist() == [6, IGNORE_INDEX]
    assert inputs.shape == (2, 2)


class FakeStrategy:
    def __init__(self, num_replicas: int, rank: int) -> None:
        self.distributed_sampler_kwargs = {"num_replicas": num_replicas, "rank": rank}


class FakeTrainer:
    def __init__(self, num_replicas: int, rank: int) -> None:
        self.strategy = FakeStrategy(num_replicas, rank)


def loader_batches(num_replicas: int, rank: int, split: str = "train") -> list[list[int]]:
    """Batches of the digits DataModule as one data-parallel rank sees them."""
    from scaletrain.data.digits import DigitsDataModule

    datamodule = DigitsDataModule(batch_size=32, seed=1)
    datamodule.trainer = FakeTrainer(num_replicas, rank)
    datamodule.setup()
    loader = getattr(datamodule, f"{split}_dataloader")()
    loader.sampler.set_epoch(2)
    return [targets.tolist() for _, targets in loader]


def test_datamodule_splits_each_global_batch_between_data_parallel_ranks():
    single = loader_batches(1, 0)
    ranks = [loader_batches(2, rank) for rank in range(2)]
    assert [len(b) for b in ranks[0]] == [16] * len(single)
    assert [a + b for a, b in zip(*ranks, strict=True)] == single


def test_datamodule_evaluation_covers_the_split_once_across_ranks():
    single = [t for batch in loader_batches(1, 0, "test") for t in batch if t != IGNORE_INDEX]
    ranks = [loader_batches(2, rank, "test") for rank in range(2)]
    merged = [t for a, b in zip(*ranks, strict=True) for t in a + b if t != IGNORE_INDEX]
    assert merged == single
    assert len(single) == 359  # every test image, once


def test_a_resumed_epoch_skips_only_its_trained_batches_once():
    sampler = GlobalBatchSampler(64, 8, shuffle=True, seed=0)
    sampler.set_epoch(3)
    full = list(sampler)
    sampler.skip_batches = 5
    assert list(sampler) == full[5:]
    assert list(sampler) == full  # the next pass over the epoch is whole again
    sampler.skip_batches = 5
    sampler.set_epoch(4)
    assert len(list(sampler)) == 8  # a new epoch never inherits a skip
