"""Language-model data: a corpus of text files as byte tokens, cut into fixed windows.

The embedded default corpus is the Python standard library's own top-level source
files: real text that ships with every Python, so nothing is downloaded.
"""

import sysconfig
from pathlib import Path

import torch
from omegaconf import DictConfig

from scaletrain.data.base import ShardedDataModule
from scaletrain.data.codec import ByteCodec
from scaletrain.data.datasets import BatchIndexedTensors
from scaletrain.data.splits import random_split_indices
from scaletrain.errors import ConfigError, check_shape

BYTE_VOCAB_SIZE = 256


def stdlib_sources() -> list[Path]:
    """The top-level ``*.py`` files of the running Python's standard library, sorted."""
    return sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))


def missing_files(paths: list[Path]) -> list[str]:
    missing = [str(path) for path in paths if not path.is_file()]
    return [f"data.paths: no such file(s): {', '.join(missing)}"] if missing else []


def read_corpus(paths: list[Path], max_bytes: int | None) -> torch.Tensor:
    """The files' bytes concatenated (each followed by a NUL separator) as uint8 tokens."""
    if max_bytes is not None and max_bytes < 1:
        raise ConfigError(f"data.max_bytes={max_bytes}: must be positive, or null for all")
    problems = missing_files(paths)
    if problems:
        raise ConfigError(problems)
    chunks, total = [], 0
    for path in paths:
        chunks.append(path.read_bytes() + b"\0")
        total += len(chunks[-1])
        if max_bytes is not None and total >= max_bytes:
            break
    corpus = b"".join(chunks)[:max_bytes]
    if not corpus:
        raise ConfigError("data.paths: the corpus is empty; give non-empty text files")
    return torch.frombuffer(bytearray(corpus), dtype=torch.uint8)


class TextDataModule(ShardedDataModule):
    """Next-token prediction over windows of ``context_length`` byte tokens.

    The corpus is cut into non-overlapping windows of ``context_length + 1`` tokens
    (inputs and the targets shifted by one); a fixed random split assigns whole windows
    to train, val and test.
    """

    def __init__(
        self,
        batch_size: int = 32,
        context_length: int = 128,
        paths: list[str] | None = None,
        max_bytes: int | None = None,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        split_seed: int = 0,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        vocab_size: int = BYTE_VOCAB_SIZE,
    ) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, shuffle=shuffle)
        check_shape("data.vocab_size", vocab_size, BYTE_VOCAB_SIZE, "byte-level text")
        self.context_length = context_length
        self.paths = [Path(p) for p in paths] if paths else stdlib_sources()
        self.max_bytes = max_bytes
        self.fractions = {"val": val_fraction, "test": test_fraction}
        self.split_seed = split_seed

    @staticmethod
    def preflight_problems(data_cfg: DictConfig) -> list[str]:
        """The corpus files that do not exist, checked before the run starts."""
        return missing_files([Path(p) for p in data_cfg.paths or []])

    def codec(self) -> ByteCodec:
        """The codec of the data: a token is one byte of the files' UTF-8 text."""
        return ByteCodec()

    def load_splits(self) -> dict[str, BatchIndexedTensors]:
        tokens = read_corpus(self.paths, self.max_bytes)
        window = self.context_length + 1
        count = len(tokens) // window
        if count < 3:
            raise ConfigError(
                f"data.context_length={self.context_length}: the corpus has {len(tokens)} "
                f"tokens, fewer than 3 windows; use more text or a shorter context"
            )
        windows = tokens[: count * window].view(count, window)  # bytes: 8x less than int64
        parts = random_split_indices(count, self.fractions, self.split_seed)
        return {
            name: BatchIndexedTensors(windows[idx, :-1], windows[idx, 1:], dtype=torch.long)
            for name, idx in parts.items()
        }
