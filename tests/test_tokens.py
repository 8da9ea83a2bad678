"""``data=tokens``: windows read from prepared token shards, sharded across ranks,
resumable mid-epoch, with the vocabulary taken from the manifest."""

import gc
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaletrain.config.preflight import validate
from scaletrain.conventions import IGNORE_INDEX, PAD_INDEX
from scaletrain.data.codec import BPECodec, ByteCodec
from scaletrain.data.preparation import PrepareSettings, prepare
from scaletrain.data.sampler import GlobalBatchSampler
from scaletrain.data.shards import HEADER, ShardWriter, read_manifest, write_manifest
from scaletrain.data.text import TextDataModule
from scaletrain.data.tokens import TokenDataModule
from scaletrain.errors import ConfigError
from scaletrain.reporting.tensorboard import event_dir
from tests.helpers import compose_train, run_here

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(300))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    """The same small corpus (two files, ~17 KB) prepared as bytes and as BPE."""
    root = tmp_path_factory.mktemp("tokens")
    (root / "text").mkdir()
    (root / "text" / "a.txt").write_text(TEXT)
    (root / "text" / "b.txt").write_text(TEXT.upper())
    dirs = {}
    for settings in (PrepareSettings("bytes", 256, shard_tokens=3000), PrepareSettings("bpe", 300)):
        dirs[settings.tokenizer] = root / settings.tokenizer
        prepare([root / "text"], dirs[settings.tokenizer], settings)
    return dirs


def shard_arrays(directory: Path, split: str) -> list[np.ndarray]:
    return [
        np.fromfile(shard.path, dtype="<u2", offset=HEADER.size)
        for shard in read_manifest(directory).splits[split]
    ]


def datamodule(directory: Path, **kwargs) -> TokenDataModule:
    dm = TokenDataModule(dir=str(directory), **kwargs)
    dm.setup()
    return dm


def test_windows_are_the_shards_cut_in_pieces_of_context_plus_one(prepared):
    dm = datamodule(prepared["bytes"], context_length=15)
    for split in ("train", "val", "test"):
        # reference: each shard on its own, cut into windows of 16 (no window straddles two)
        windows = torch.cat(
            [
                torch.from_numpy(a[: len(a) // 16 * 16].astype(np.int64)).view(-1, 16)
                for a in shard_arrays(prepared["bytes"], split)
            ]
        )
        dataset = dm.splits[split]
        assert len(dataset) == len(windows) > 0
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
        inputs, targets = dataset[order]
        assert torch.equal(inputs, windows[order, :-1])
        assert torch.equal(targets, windows[order, 1:])
    train_tokens = sum(len(a) for a in shard_arrays(prepared["bytes"], "train"))
    assert (
        len(dm.splits["train"])
        == sum(n // 16 for n in [3000] * (train_tokens // 3000)) + (train_tokens % 3000) // 16
    )


def test_padding_indices_give_ignored_targets(prepared):
    dataset = datamodule(prepared["bytes"], context_length=15).splits["val"]
    inputs, targets = dataset[[2, PAD_INDEX]]
    assert inputs.shape == targets.shape == (2, 15)
    assert torch.equal(inputs[0], dataset[[2]][0][0]) and (targets[0] != IGNORE_INDEX).all()
    assert (targets[1] == IGNORE_INDEX).all()


def test_two_ranks_together_read_the_single_process_batches(prepared):
    dataset = datamodule(prepared["bpe"], context_length=7).splits["train"]

    def batches(replicas: int, rank: int) -> list[torch.Tensor]:
        sampler = GlobalBatchSampler(len(dataset), 8, replicas, rank, seed=1)
        sampler.set_epoch(2)
        return [dataset[indices][0] for indices in sampler]

    single = batches(1, 0)
    ranks = [batches(2, 0), batches(2, 1)]
    assert len(single) == len(dataset) // 8 > 3
    for step, batch in enumerate(single):
        assert torch.equal(torch.cat([ranks[0][step], ranks[1][step]]), batch)
        assert len(ranks[0][step]) == 4


def test_codecs_follow_the_data(prepared):
    bpe = datamodule(prepared["bpe"]).codec()
    assert isinstance(bpe, BPECodec) and bpe.vocab_size == read_manifest(prepared["bpe"]).vocab_size
    assert isinstance(datamodule(prepared["bytes"]).codec(), ByteCodec)
    assert isinstance(TextDataModule().codec(), ByteCodec)
    # the manifest's byte counts are what the codec says the tokens stand for
    train = np.concatenate(shard_arrays(prepared["bpe"], "train"))
    manifest = json.loads((prepared["bpe"] / "manifest.json").read_text())
    assert (
        bpe.token_bytes()[torch.from_numpy(train.astype(np.int64))].sum().item()
        == (manifest["splits"]["train"]["bytes"])
    )


def test_preflight_reads_the_vocabulary_from_the_manifest(prepared, tmp_path):
    overrides = ["experiment=gpt_text", "data=tokens", f"data.dir={prepared['bpe']}"]
    cfg = compose_train(*overrides)
    vocab = read_manifest(prepared["bpe"]).vocab_size
    assert cfg.model.net.vocab_size == cfg.data.vocab_size == vocab
    assert validate(cfg) == []
    assert validate(compose_train(*overrides, "model.net.vocab_size=1000")) == [
        f"model.net.vocab_size=1000: the data has data.vocab_size={vocab} tokens (the "
        f"tokenizer of data.dir={prepared['bpe']}); use {vocab}"
    ]
    assert validate(compose_train("experiment=gpt_text", "data=tokens")) == [
        "data.dir is required: set it on the command line, e.g. data.dir=..."
    ]
    assert validate(
        compose_train("experiment=gpt_text", "data=tokens", f"data.dir={tmp_path}")
    ) == [
        f"data.dir={tmp_path}: no manifest.json; prepare it with python -m scaletrain.prepare "
        f"<text files or folders> --out {tmp_path}"
    ]


def test_the_bpe_experiment_prepares_its_data_on_first_use(tmp_path):
    cfg = compose_train("experiment=gpt_bpe", f"paths.root_dir={tmp_path}")
    assert cfg.data.dir == f"{tmp_path}/data/stdlib-bpe4096"
    assert cfg.model.net.vocab_size == 4096  # the size it will prepare, until it has
    assert validate(cfg) == []


def test_a_run_prepares_data_from_its_prepare_setting(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)
    dm = TokenDataModule(
        dir=str(tmp_path / "out"),
        context_length=15,
        prepare={"sources": [str(tmp_path / "a.txt")], "tokenizer": "bytes", "vocab_size": 256},
    )
    dm.prepare_data()
    dm.setup()
    manifest = read_manifest(tmp_path / "out")
    assert manifest.tokenizer == "bytes"
    assert sum(manifest.split_tokens(split) for split in manifest.splits) == len(TEXT) + 1
    assert {name: len(split) for name, split in dm.splits.items()} == {
        split: manifest.split_tokens(split) // 16 for split in ("train", "val", "test")
    }


@pytest.mark.parametrize("damage", ["truncated", "foreign"])
def test_a_damaged_shard_is_a_one_line_error(prepared, tmp_path, damage):
    directory = tmp_path / "copy"
    directory.mkdir()
    for path in prepared["bytes"].iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    shard = directory / "train-00001.bin"
    if damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:-10])
        message = "shard train-00001.bin has 6014 bytes, the manifest says 6024 (truncated"
    else:
        shard.write_bytes(b"\0" * 6024)
        message = "train-00001.bin is not a token shard (no SCTOKENS header)"
    with pytest.raises(ConfigError) as error:
        datamodule(directory)
    (problem,) = error.value.problems
    assert problem.startswith(f"data.dir={directory}: {message}")


TINY_GPT = [
    "experiment=gpt_text",
    "data=tokens",
    "data.context_length=16",
    "data.batch_size=8",
    "model.net.dim=32",
    "model.net.num_layers=1",
    "trainer.log_every_n_steps=1",
    "trainer.limit_train_batches=12",
    "trainer.val_check_interval=1.0",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
]


def losses_by_step(run_dir: Path) -> dict[int, float]:
    events = EventAccumulator(str(event_dir(run_dir)))
    events.Reload()
    return {event.step: event.value for event in events.Scalars("train/loss")}


@pytest.mark.slow  # three short training runs in this process
def test_training_on_tokens_resumes_mid_epoch_with_the_next_batch(prepared, tmp_path):
    """Epochs of 12 batches; a checkpoint after step 5 resumes at batch 6 of that epoch:
    every later loss equals the uninterrupted run's."""
    common = [*TINY_GPT, f"data.dir={prepared['bpe']}", f"paths.root_dir={tmp_path}"]
    straight = run_here("train", tmp_path / "straight", *common, "trainer.max_epochs=2")
    assert straight.returncode == 0
    summary = straight.metrics
    assert summary["global_step"] == 24
    assert set(summary["metrics"]) >= {"train/loss", "val/loss", "test/loss", "test/ppl"}
    first = run_here(
        "train",
        tmp_path / "first",
        *common,
        "trainer.max_steps=8",
        "+callbacks.model_checkpoint.every_n_train_steps=5",
        "callbacks.model_checkpoint.monitor=null",
        "callbacks.model_checkpoint.save_top_k=-1",
        "test=false",
    )
    assert first.returncode == 0
    (step_5,) = (first.run_dir / "checkpoints").glob("*step000005.ckpt")
    resumed = run_here(
        "train", tmp_path / "resumed", *common, "trainer.max_epochs=2", f"ckpt_path={step_5}"
    )
    assert resumed.returncode == 0
    reference, after = losses_by_step(straight.run_dir), losses_by_step(resumed.run_dir)
    assert min(after) == 5 and len(after) == 24 - 5
    for step, loss in after.items():
        assert loss == reference[step], f"step {step}"


def write_tokens(directory: Path, tokens: int) -> None:
    """A prepared directory of random uint16 tokens written straight from numpy."""
    directory.mkdir()
    writer = ShardWriter(directory, "train", np.dtype("<u2"), shard_tokens=1 << 22)
    rng = np.random.default_rng(0)
    for _ in range(tokens // (1 << 20)):
        writer.write(rng.integers(0, 50_000, 1 << 20, dtype=np.uint16))
    writer.close()
    splits = {"train": {"tokens": writer.tokens, "bytes": 0, "shards": writer.shards}}
    write_manifest(
        directory,
        {"format": "scaletrain-tokens", "version": 1, "tokenizer": "bytes", "vocab_size": 50_000,
         "dtype": "<u2", "splits": splits},
    )  # fmt: skip


def private_memory() -> int:
    """This process's resident anonymous memory, in bytes (file-backed pages of a memory
    map are the operating system's page cache, shared by every process and reclaimable)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def memory_growth_reading(directory: Path) -> int:
    dm = datamodule(directory, context_length=256, batch_size=16)
    dataset = dm.splits["train"]
    # the sampler's order (8 bytes per window) is drawn first: the reads are measured
    batches = list(itertools.islice(GlobalBatchSampler(len(dataset), 16, seed=0), 200))
    gc.collect()
    before = private_memory()
    for indices in batches:
        dataset[indices]
    return private_memory() - before


def test_reading_windows_takes_the_same_memory_from_a_corpus_ten_times_larger(tmp_path):
    write_tokens(tmp_path / "small", 5 << 20 >> 1)  # 5 MiB of tokens
    write_tokens(tmp_path / "large", 50 << 20 >> 1)  # 50 MiB
    small = memory_growth_reading(tmp_path / "small")
    large = memory_growth_reading(tmp_path / "large")
    assert large < small + (2 << 20), (small, large)
    assert large < 5 << 20  # nowhere near the corpus
