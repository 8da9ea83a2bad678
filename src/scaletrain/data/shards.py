"""The on-disk format of prepared token data: shard files and ``manifest.json``.

A prepared directory holds, for each split (``train``, ``val``, ``test``), a few shard
files ``<split>-00000.bin``, ``<split>-00001.bin`` ...; ``tokenizer.json`` for byte-level
BPE; and ``manifest.json``, written last, which says what the shards hold. A directory
without a manifest holds nothing usable.

A shard is a 24-byte header followed by the raw token ids, little-endian ``uint16``
where the vocabulary fits (up to 65,535 ids) and ``uint32`` otherwise, so that any
window is read at its offset without loading the file. The header is
``b"SCTOKENS"``, the format version (``uint32``), the bytes per token (``uint32``) and
the number of tokens (``uint64``); with the manifest's token count it tells a complete
shard from a truncated or foreign file.

Every file is written to a scratch file of this process's own in the same directory,
flushed to disk and renamed into place (``os.replace``), so that a reader never sees
a part of one, and several processes preparing the same directory do not collide.
"""

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from scaletrain.checkpoint.atomic import sync_directory

FORMAT = "scaletrain-tokens"
VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
SPLITS = ("train", "val", "test")
MAGIC = b"SCTOKENS"
HEADER = struct.Struct("<8sIIQ")  # magic, version, bytes per token, tokens


class ShardError(ValueError):
    """A prepared directory that cannot be read: no manifest, or shards that do not match it."""


class NoManifest(ShardError):
    """The directory has no manifest: it was never prepared, or its preparation did not end."""


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned type that holds every token id."""
    return np.dtype("<u2") if vocab_size <= 2**16 - 1 else np.dtype("<u4")


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class AtomicFile:
    """A file that appears at ``path`` only once :meth:`commit` has put it there, complete
    and on disk; :meth:`discard` (or a kill) leaves ``path`` as it was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        self.scratch = Path(scratch)
        os.fchmod(handle, 0o666 & ~current_umask())  # mkstemp's 0600 would hide it from others
        self.file: BinaryIO = os.fdopen(handle, "wb")

    def commit(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.scratch, self.path)
        sync_directory(self.path.parent)

    def discard(self) -> None:
        self.file.close()
        self.scratch.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """:class:`AtomicFile` as a context: committed where the block ends without an error."""
    atomic = AtomicFile(path)
    try:
        yield atomic.file
    except BaseException:
        atomic.discard()
        raise
    atomic.commit()


def write_bytes_atomically(path: Path, data: bytes) -> None:
    with atomic_file(path) as file:
        file.write(data)


class ShardWriter:
    """Writes one split's token stream as shards of at most ``shard_tokens`` tokens."""

    def __init__(self, directory: Path, split: str, dtype: np.dtype, shard_tokens: int) -> None:
        self.directory = directory
        self.split = split
        self.dtype = dtype
        self.shard_tokens = shard_tokens
        self.shards: list[dict[str, Any]] = []  # the finished ones, as the manifest lists them
        self.written: list[Path] = []
        self._file: AtomicFile | None = None
        self._count = 0

    @property
    def tokens(self) -> int:
        return sum(shard["tokens"] for shard in self.shards) + self._count

    def write(self, tokens: np.ndarray) -> None:
        while len(tokens):
            if self._file is None:
                self._start()
            take = min(len(tokens), self.shard_tokens - self._count)
            self._file.file.write(tokens[:take].astype(self.dtype, copy=False).tobytes())
            self._count += take
            tokens = tokens[take:]
            if self._count == self.shard_tokens:
                self._finish()

    def close(self) -> None:
        if self._file is not None:
            self._finish()

    def abort(self) -> None:
        """Drop the shard being written (its scratch file goes)."""
        if self._file is not None:
            self._file.discard()
            self._file = None

    def _name(self) -> str:
        return f"{self.split}-{len(self.shards):05d}.bin"

    def _start(self) -> None:
        self._file = AtomicFile(self.directory / self._name())
        self._file.file.write(HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, 0))
        self._count = 0

    def _finish(self) -> None:
        self._file.file.seek(0)
        self._file.file.write(HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self._count))
        name = self._name()
        self._file.commit()
        self._file = None
        self.shards.append({"file": name, "tokens": self._count})
        self.written.append(self.directory / name)
        self._count = 0


@dataclass(frozen=True)
class Shard:
    """One shard file as the manifest describes it."""

    path: Path
    tokens: int


@dataclass(frozen=True)
class Manifest:
    """What ``manifest.json`` says about a prepared directory."""

    directory: Path
    tokenizer: str
    vocab_size: int
    dtype: np.dtype
    splits: dict[str, list[Shard]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer_path(self) -> Path | None:
        return self.directory / TOKENIZER_FILE if self.tokenizer == "bpe" else None

    def split_tokens(self, split: str) -> int:
        return sum(shard.tokens for shard in self.splits.get(split, []))


def manifest_path(directory: str | Path) -> Path:
    return Path(directory) / MANIFEST


def read_manifest(directory: str | Path) -> Manifest:
    """The manifest of a prepared directory; :class:`ShardError` where there is none or it
    is not one of ours."""
    directory = Path(directory)
    path = manifest_path(directory)
    if not path.is_file():
        raise NoManifest(f"no {MANIFEST}")
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != FORMAT:
            raise ShardError(f"{MANIFEST} is not a scaletrain token manifest")
        if raw.get("version") != VERSION:
            raise ShardError(
                f"{MANIFEST} has format version {raw.get('version')}; this scaletrain reads "
                f"version {VERSION}"
            )
        splits = {
            name: [Shard(directory / s["file"], int(s["tokens"])) for s in split["shards"]]
            for name, split in raw["splits"].items()
        }
        return Manifest(
            directory, raw["tokenizer"], int(raw["vocab_size"]), np.dtype(raw["dtype"]), splits, raw
        )
    except (ValueError, KeyError, TypeError) as error:
        if isinstance(error, ShardError):
            raise
        raise ShardError(f"{MANIFEST} is unreadable ({type(error).__name__}: {error})") from None


def check_shard(shard: Shard, dtype: np.dtype) -> None:
    """Raise :class:`ShardError` unless ``shard`` is complete: the header's magic, version,
    token size and count, and the file's size, all as the manifest says."""
    name = shard.path.name
    expected = HEADER.size + shard.tokens * dtype.itemsize
    try:
        size = shard.path.stat().st_size
        with open(shard.path, "rb") as file:
            header = file.read(HEADER.size)
    except FileNotFoundError:
        raise ShardError(f"shard {name} is missing") from None
    if len(header) < HEADER.size or header[:8] != MAGIC:
        raise ShardError(f"{name} is not a token shard (no {MAGIC.decode()} header)")
    _, version, itemsize, count = HEADER.unpack(header)
    if (version, itemsize, count) != (VERSION, dtype.itemsize, shard.tokens):
        raise ShardError(
            f"shard {name} holds {count} tokens of {itemsize} bytes (format {version}); "
            f"the manifest says {shard.tokens} of {dtype.itemsize} (format {VERSION})"
        )
    if size != expected:
        raise ShardError(
            f"shard {name} has {size} bytes, the manifest says {expected} (truncated or replaced)"
        )


class ShardReader:
    """Reads windows of a shard's tokens with ``pread``: only the bytes asked for are read,
    through the page cache, and nothing of the file is mapped into the process (a mapping
    would count every page the kernel maps around a read in this process's resident
    memory, growing with the corpus)."""

    def __init__(self, shard: Shard, dtype: np.dtype) -> None:
        self.path = shard.path
        self.dtype = dtype
        self.fd = os.open(shard.path, os.O_RDONLY)

    def read(self, start: int, count: int) -> np.ndarray:
        """Tokens ``start`` to ``start + count`` (a copy, writable)."""
        size = count * self.dtype.itemsize
        data = os.pread(self.fd, size, HEADER.size + start * self.dtype.itemsize)
        if len(data) != size:
            raise ShardError(f"shard {self.path.name} ends before token {start + count}")
        return np.frombuffer(data, dtype=self.dtype)

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            os.close(self.fd)


def open_shard(shard: Shard, dtype: np.dtype) -> ShardReader:
    """A reader of the shard's tokens: windows are read when they are used."""
    return ShardReader(shard, dtype)


def manifest_vocab_size(directory: str, default: int | None = None) -> int | None:
    """The vocabulary of the data prepared in ``directory`` (the config's
    ``manifest_vocab_size`` resolver); ``default`` where it has no readable manifest (the
    preflight says why, unless the run prepares it first)."""
    try:
        return read_manifest(directory).vocab_size
    except ShardError:
        return default


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically: the last file of a prepared directory."""
    write_bytes_atomically(
        manifest_path(directory), json.dumps(manifest, indent=1).encode() + b"\n"
    )
