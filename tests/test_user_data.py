"""A user's plain LightningDataModule (tests/user_data.py) under data parallelism: each
data-parallel rank trains on its own slice of every epoch, the ranks of one
tensor-parallel group on the same one; scaletrain's own loaders stay as they are."""

import json
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import DistributedSampler

from scaletrain.data.digits import DigitsDataModule
from tests.helpers import Run, compose_train
from tests.user_data import MODEL_SIZES, IndexedData

TRAIN_SIZE = 101  # odd: DistributedSampler pads it to 2 x 51 by repeating one sample
EPOCHS = 2


def user_data_overrides() -> list[str]:
    """The default run with ``data`` replaced by the plain data module: its target, a batch
    size, and every other key of the default data config deleted (the module takes none)."""
    keys = set(compose_train().data) - {"_target_", "batch_size"}
    return [
        "data._target_=tests.user_data.IndexedData",
        "data.batch_size=8",
        *(f"~data.{key}" for key in sorted(keys)),
        *MODEL_SIZES,
    ]


def trained_indices(train_cli, tmp_path: Path, ranks: int, *overrides: str) -> tuple[Run, list]:
    """The run, and per rank, per epoch (as a string), the indices that rank trained on."""
    path = tmp_path / "indices"
    run = train_cli(
        *user_data_overrides(),
        f"+callbacks.indices={{_target_: tests.user_data.RecordTrainedIndices, path: {path}}}",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.log_every_n_steps=1",
        *overrides,
    )
    assert run.returncode == 0, run.output
    return run, [json.loads(Path(f"{path}.rank{rank}").read_text()) for rank in range(ranks)]


def assert_split(epoch: list[list[int]]) -> None:
    """One epoch of 2 data-parallel ranks is DistributedSampler's split: 51 samples each,
    together every sample once, except the one repeated to make the halves even."""
    assert [len(indices) for indices in epoch] == [51, 51]
    counts = Counter(epoch[0] + epoch[1])
    assert set(counts) == set(range(TRAIN_SIZE))
    assert sorted(counts.values()) == [1] * (TRAIN_SIZE - 1) + [2]
    assert all(len(set(indices)) == len(indices) for indices in epoch)  # twice on two ranks


def test_lightning_shards_a_plain_loader_and_leaves_scaletrains_as_they_are():
    """Lightning's own preparation of each loader, as fit does it for a 2-rank ddp run with
    the default trainer config. It is reached through Lightning's private data connector,
    as only a multi-process run reaches it publicly; the slow tests check the outcome."""
    cfg = compose_train("strategy=ddp", "trainer.devices=2")
    trainer = L.Trainer(
        accelerator="cpu",
        strategy="ddp",
        devices=2,
        use_distributed_sampler=cfg.trainer.use_distributed_sampler,
        logger=False,
    )
    stages = {"train": RunningStage.TRAINING, "val": RunningStage.VALIDATING}

    def prepared(loader, split: str):
        return trainer._data_connector._prepare_dataloader(
            loader, shuffle=split == "train", mode=stages[split]
        )

    ours = DigitsDataModule(batch_size=32)
    ours.trainer = trainer
    ours.setup()
    plain = IndexedData()
    plain.setup("fit")
    for split in stages:
        loader = getattr(ours, f"{split}_dataloader")()
        assert prepared(loader, split) is loader
        sampler = prepared(getattr(plain, f"{split}_dataloader")(), split).sampler
        assert type(sampler) is DistributedSampler
        assert (sampler.num_replicas, sampler.rank, sampler.shuffle) == (2, 0, split == "train")


@pytest.mark.slow  # starts training runs as subprocesses
def test_ddp_ranks_train_on_disjoint_halves_of_every_epoch(train_cli, tmp_path):
    run, ranks = trained_indices(train_cli, tmp_path, 2, "strategy=ddp", "trainer.devices=2")
    for epoch in range(EPOCHS):
        assert_split([rank[str(epoch)] for rank in ranks])
    assert ranks[0]["0"] != ranks[0]["1"]  # reshuffled every epoch
    # What Lightning says of it, once, in one line: the test split's DistributedSampler may
    # repeat a few samples to even the ranks out.
    (warning,) = run.stderr.splitlines()
    assert "Using `DistributedSampler` with the dataloaders. During `trainer.test()`" in warning


@pytest.mark.slow  # starts training runs as subprocesses
def test_a_tensor_parallel_group_trains_on_the_same_samples(train_cli, tmp_path):
    """2 data-parallel x 2 tensor-parallel ranks: ranks 0 and 1 form one tensor-parallel
    group, ranks 2 and 3 the other."""
    _, ranks = trained_indices(
        train_cli,
        tmp_path,
        4,
        "strategy=model_sharded",
        "strategy.tensor_parallel_size=2",
        "trainer.devices=4",
    )
    assert ranks[0] == ranks[1] and ranks[2] == ranks[3]
    for epoch in range(EPOCHS):
        assert_split([ranks[0][str(epoch)], ranks[2][str(epoch)]])
