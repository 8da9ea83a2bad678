"""Language-model data from prepared token shards (``python -m scaletrain.prepare``),
read from disk window by window: a corpus larger than memory trains like a small one.

Each split's shards are cut into non-overlapping windows of ``context_length + 1``
tokens (inputs, and the targets shifted by one); a window never straddles two shards,
so each shard's last ``tokens % (context_length + 1)`` tokens are unused. Sample ``i``
of a split is its ``i``-th window, found by its shard and offset; a batch reads only
its own windows' pages.

Why reads by offset and not a streaming library (litdata, webdataset): every window is
addressable by its index, so the :class:`GlobalBatchSampler` draws exact global batches
from a permutation that depends only on the seed and the epoch, whatever the number of
ranks or shards (each rank reads just its slice), and a mid-epoch resume continues with
the next batch by index, as for every other data module; no extra dependency. Windows
are read with ``pread`` rather than through ``numpy.memmap``: both go through the
operating system's page cache, but a mapping counts every page the kernel maps around a
read in the process's resident memory (20 MB more per rank over 30 steps of a 200 MB
corpus than of a 20 MB one), while a read leaves only the window. The files are opened
lazily in each process that reads (DataLoader workers included), so nothing of the
corpus is copied between processes.
"""

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from scaletrain.conventions import IGNORE_INDEX, PAD_INDEX
from scaletrain.data.base import ShardedDataModule
from scaletrain.data.codec import BPECodec, ByteCodec, Codec
from scaletrain.data.preparation import PrepareError, PrepareSettings, prepare
from scaletrain.data.shards import (
    Manifest,
    NoManifest,
    Shard,
    ShardError,
    ShardReader,
    check_shard,
    manifest_path,
    open_shard,
    read_manifest,
)
from scaletrain.data.text import stdlib_sources
from scaletrain.errors import ConfigError

log = logging.getLogger("scaletrain")

# data.prepare.sources: a name for a corpus that ships with Python
SOURCES = {"stdlib": stdlib_sources}


def prepare_command(directory: str | Path) -> str:
    return f"python -m scaletrain.prepare <text files or folders> --out {directory}"


def problem_of(directory: str | Path, error: ShardError) -> str:
    """The one-line problem of a directory whose manifest cannot be read."""
    if isinstance(error, NoManifest):
        return f"data.dir={directory}: {error}; prepare it with {prepare_command(directory)}"
    return f"data.dir={directory}: {error}"


class TokenWindows(Dataset):
    """One split's windows; ``dataset[list_of_indices]`` returns ``(inputs, targets)``.

    ``PAD_INDEX`` gives a real window with ``IGNORE_INDEX`` targets, as in
    :class:`~scaletrain.data.datasets.BatchIndexedTensors`.
    """

    def __init__(self, shards: list[Shard], dtype: np.dtype, window: int) -> None:
        self.shards = [shard for shard in shards if shard.tokens >= window]
        self.dtype = dtype
        self.window = window
        counts = [shard.tokens // window for shard in self.shards]
        self.starts = np.cumsum([0, *counts])  # the first window index of each shard
        self._readers: list[ShardReader] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self) -> dict[str, Any]:
        # a worker process opens its own files
        return {**self.__dict__, "_readers": None}

    def readers(self) -> list[ShardReader]:
        if self._readers is None:
            self._readers = [open_shard(shard, self.dtype) for shard in self.shards]
        return self._readers

    def __getitem__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        padded = index == PAD_INDEX
        index = np.where(padded, 0, index)
        if len(index) and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"window index out of range (the split has {len(self)})")
        shard = np.searchsorted(self.starts, index, side="right") - 1
        offset = (index - self.starts[shard]) * self.window
        readers = self.readers()
        rows = np.empty((len(index), self.window), dtype=np.int64)
        for row, (s, o) in enumerate(zip(shard.tolist(), offset.tolist(), strict=True)):
            rows[row] = readers[s].read(o, self.window)
        windows = torch.from_numpy(rows)
        targets = windows[:, 1:].masked_fill(torch.from_numpy(padded)[:, None], IGNORE_INDEX)
        return windows[:, :-1], targets


class TokenDataModule(ShardedDataModule):
    """Next-token prediction on the token shards of a prepared directory ``dir``.

    ``vocab_size`` is the manifest's (the config reads it through the
    ``manifest_vocab_size`` resolver); the model's vocabulary follows it. ``prepare``
    (optional) prepares ``dir`` on first use, before training, from ``sources`` (a list
    of files and folders, or ``stdlib``) with :class:`PrepareSettings`' keys, e.g.
    ``{sources: stdlib, tokenizer: bpe, vocab_size: 4096}``; a directory that already
    has a manifest is used as it is.
    """

    def __init__(
        self,
        dir: str,
        batch_size: int = 32,
        context_length: int = 128,
        vocab_size: int | None = None,
        prepare: dict | None = None,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, shuffle=shuffle)
        self.dir = Path(dir)
        self.context_length = context_length
        self.vocab_size = vocab_size
        self.prepare_settings = dict(prepare) if prepare else None

    @staticmethod
    def preflight_problems(data_cfg: DictConfig) -> list[str]:
        """A directory with no manifest that the run does not prepare; settings that
        disagree with its manifest; ``data.prepare`` keys that prepare does not take."""
        directory = data_cfg.dir
        preparing = data_cfg.get("prepare")
        if preparing:
            problems = prepare_problems(dict(preparing))
            if problems or not manifest_path(directory).exists():
                return problems
        try:
            manifest = read_manifest(directory)
        except ShardError as error:
            return [problem_of(directory, error)]
        vocab = data_cfg.get("vocab_size")
        if vocab is not None and vocab != manifest.vocab_size:
            return [
                f"data.vocab_size={vocab}: the data in data.dir={directory} has "
                f"{manifest.vocab_size} tokens; use {manifest.vocab_size}"
            ]
        return []

    def prepare_data(self) -> None:
        """Prepare ``dir`` where ``prepare`` says so and it has no manifest yet. Lightning
        calls this on local rank 0 of each node before any rank's ``setup``; nodes that
        share the directory may prepare it at once (each writes the same files through
        scratch files of its own)."""
        if not self.prepare_settings or manifest_path(self.dir).exists():
            return
        settings = dict(self.prepare_settings)
        sources = settings.pop("sources")
        inputs = SOURCES[sources]() if isinstance(sources, str) else list(sources)
        log.info("preparing data.dir=%s (%d files) ...", self.dir, len(inputs))
        try:
            prepared = prepare(inputs, self.dir, PrepareSettings(**settings))
        except PrepareError as error:
            raise ConfigError(f"data.prepare: {error}") from None
        tokens = {split: part["tokens"] for split, part in prepared.manifest["splits"].items()}
        log.info("prepared data.dir=%s in %.1f s: %s tokens", self.dir, prepared.seconds, tokens)

    def manifest(self) -> Manifest:
        try:
            return read_manifest(self.dir)
        except ShardError as error:
            raise ConfigError(problem_of(self.dir, error)) from None

    def codec(self) -> Codec:
        """The codec the data was prepared with: what sampling decodes, what bits per byte
        count."""
        manifest = self.manifest()
        return BPECodec(manifest.tokenizer_path) if manifest.tokenizer == "bpe" else ByteCodec()

    def load_splits(self) -> dict[str, TokenWindows]:
        manifest = self.manifest()
        if self.vocab_size is not None and self.vocab_size != manifest.vocab_size:
            raise ConfigError(
                f"data.vocab_size={self.vocab_size}: the data in data.dir={self.dir} has "
                f"{manifest.vocab_size} tokens; use {manifest.vocab_size}"
            )
        try:
            for shards in manifest.splits.values():
                for shard in shards:
                    check_shard(shard, manifest.dtype)
        except ShardError as error:
            raise ConfigError(
                f"data.dir={self.dir}: {error}; prepare it again ({prepare_command(self.dir)})"
            ) from None
        window = self.context_length + 1
        splits = {
            split: TokenWindows(manifest.splits.get(split, []), manifest.dtype, window)
            for split in ("train", "val", "test")
        }
        if len(splits["train"]) == 0:
            raise ConfigError(
                f"data.context_length={self.context_length}: no train shard of data.dir="
                f"{self.dir} holds a window of {window} tokens; use a shorter context"
            )
        return splits


def prepare_problems(settings: dict) -> list[str]:
    """What is wrong with a ``data.prepare`` setting, before anything is prepared."""
    sources = settings.get("sources")
    if sources is None:
        return ["data.prepare.sources: required (a list of files and folders, or stdlib)"]
    if isinstance(sources, str) and sources not in SOURCES:
        return [f"data.prepare.sources={sources}: valid: {', '.join(SOURCES)}, or a list of paths"]
    keys = set(settings) - {"sources"}
    known = set(PrepareSettings.__dataclass_fields__)
    unknown = sorted(keys - known)
    if unknown:
        return [f"data.prepare.{unknown[0]}: unknown setting; valid: {', '.join(sorted(known))}"]
    problems = PrepareSettings(**{key: settings[key] for key in keys}).problems()
    return [f"data.prepare: {problem}" for problem in problems]
