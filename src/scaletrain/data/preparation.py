"""Prepare a corpus of text files as token shards (the work behind ``scaletrain.prepare``).

    find the text files -> fingerprint them with the settings -> (up to date: stop)
    -> train the tokenizer (bpe) or load a given one -> encode file by file -> cut the
    token stream into chunks, each assigned to train, val or test -> write each split's shards
    -> tokenizer.json -> manifest.json (last)

Inputs: files given by name must be UTF-8 text or row files (``.jsonl``, ``.jsonl.gz``,
``.parquet``: one document per row, the text in ``text_field``); folders are searched
recursively for files matching ``glob`` (default: every file), skipping hidden files and
folders (a name starting with ``.``) and files that are neither row files nor look like
UTF-8 text (a NUL byte or invalid UTF-8 in their first 8 KiB). Files are read in sorted
path order, rows in file order; each text file, and each row, is a document followed by
an end-of-document token (``<|endoftext|>`` for BPE, the NUL byte for bytes, a given
tokenizer's ``eos_token``), so rows give the shards that the same texts as files would.

Tokenizers: ``bpe`` trains a byte-level BPE on the corpus, ``bytes`` keeps its UTF-8 bytes,
and a directory holding a Hugging Face ``tokenizer.json`` (a checkpoint's, to fine-tune
it) encodes with that one, as is.

Splits: the token stream is cut into fixed chunks of ``chunk_tokens`` tokens (65,536,
or fewer for a corpus under 16 MiB, so that it has about 256 bytes' worth of chunks or
more), and whole chunks go to val and test, evenly spread over the corpus: chunk ``i``
is a val chunk where ``floor(f * (i + 1) + p)`` exceeds ``floor(f * i + p)`` (``f`` the
val fraction, ``p`` a phase drawn from ``seed``), and likewise test among the rest. Every
prefix of the corpus thus holds its share of held-out text to within one chunk, and the
same inputs and settings always give the same split. Chunks, not whole files, so that a
corpus of one large file has held-out data too.
"""

import codecs
import contextlib
import fnmatch
import hashlib
import io
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from scaletrain.data import rows, shards
from scaletrain.data.rows import is_row_file
from scaletrain.data.shards import SPLITS, TOKENIZER_FILE, ShardError, ShardWriter

END_OF_DOCUMENT = "<|endoftext|>"
BYTE_END_OF_DOCUMENT = 0  # NUL: never part of a text file, so never ambiguous
BYTE_VOCAB_SIZE = 256
BLOCK_BYTES = 1 << 20  # files are read and encoded in blocks of about this size
SNIFF_BYTES = 8192
MAX_CHUNK_TOKENS = 1 << 16
TOKENIZERS = ("bpe", "bytes")


class PrepareError(ValueError):
    """Input or settings that prepare cannot work with; the message is one line."""


@dataclass(frozen=True)
class PrepareSettings:
    """Everything besides the input files that decides the prepared data."""

    tokenizer: str = "bpe"
    vocab_size: int = 4096
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    shard_tokens: int = 1 << 24
    chunk_tokens: int | None = None  # None: 65,536, or fewer for a small corpus
    seed: int = 0
    glob: str = "*"
    text_field: str = "text"  # the field holding the text in .jsonl(.gz) and .parquet rows

    def problems(self) -> list[str]:
        problems = []
        given = given_tokenizer_file(self.tokenizer)
        if given is not None and not given.is_file():
            problems.append(
                f"--tokenizer {self.tokenizer}: valid: {', '.join(TOKENIZERS)}, or a directory "
                f"holding {TOKENIZER_FILE} (a Hugging Face checkpoint's or tokenizer's)"
            )
        elif self.tokenizer == "bytes" and self.vocab_size != BYTE_VOCAB_SIZE:
            problems.append(
                f"--vocab-size {self.vocab_size}: the bytes tokenizer has {BYTE_VOCAB_SIZE} "
                "tokens; leave --vocab-size out"
            )
        elif self.tokenizer == "bpe" and not BYTE_VOCAB_SIZE + 1 <= self.vocab_size < 2**32:
            problems.append(
                f"--vocab-size {self.vocab_size}: byte-level BPE needs at least "
                f"{BYTE_VOCAB_SIZE + 1} (the bytes and the end-of-document token)"
            )
        for name, value in (("val", self.val_fraction), ("test", self.test_fraction)):
            if not 0 <= value < 1:
                problems.append(f"--{name}-fraction {value}: must be in [0, 1)")
        if self.val_fraction + self.test_fraction >= 1:
            problems.append(
                f"--val-fraction {self.val_fraction} --test-fraction {self.test_fraction}: "
                "leave something to train on (their sum must be below 1)"
            )
        if self.shard_tokens < 1:
            problems.append(f"--shard-tokens {self.shard_tokens}: must be a positive integer")
        if self.chunk_tokens is not None and self.chunk_tokens < 1:
            problems.append(f"--chunk-tokens {self.chunk_tokens}: must be a positive integer")
        return problems

    def describe(self) -> str:
        """The settings as command-line options."""
        words = [f"--tokenizer {self.tokenizer}", f"--vocab-size {self.vocab_size}"]
        default = PrepareSettings(self.tokenizer, self.vocab_size)
        for key, value in asdict(self).items():
            if key not in ("tokenizer", "vocab_size") and value != getattr(default, key):
                words.append(f"--{key.replace('_', '-')} {value}")
        return " ".join(words)


@dataclass
class Prepared:
    """What :func:`prepare` did: the manifest it wrote (or found up to date)."""

    manifest: dict[str, Any]
    up_to_date: bool
    seconds: float = 0.0
    skipped: list[Path] = field(default_factory=list)


# -- finding the text files -----------------------------------------------------------------


def looks_like_text(path: Path) -> bool:
    """No NUL byte and valid UTF-8 in the first :data:`SNIFF_BYTES` (a character cut at
    the end of them is allowed)."""
    with open(path, "rb") as file:
        head = file.read(SNIFF_BYTES)
    if b"\0" in head:
        return False
    try:
        codecs.getincrementaldecoder("utf-8")("strict").decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return True


def find_files(inputs: list[str | Path], glob: str = "*") -> tuple[list[Path], list[Path]]:
    """The text files named by ``inputs`` (files, or folders searched recursively), sorted
    and without repeats; and the files of folders skipped as not text."""
    if not inputs:
        raise PrepareError("no input files: give text files or folders")
    found, skipped = set(), []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_file():
            if not is_row_file(path) and not looks_like_text(path):
                raise PrepareError(f"{path}: not a UTF-8 text file")
            found.add(path.resolve())
        elif path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in files:
                    candidate = Path(root) / name
                    if name.startswith(".") or not fnmatch.fnmatch(name, glob):
                        continue
                    if candidate.is_file() and (
                        is_row_file(candidate) or looks_like_text(candidate)
                    ):
                        found.add(candidate.resolve())
                    elif candidate.is_file():
                        skipped.append(candidate)
        else:
            raise PrepareError(f"{path}: no such file or folder")
    if not found:
        where = ", ".join(str(item) for item in inputs)
        raise PrepareError(f"no text files (matching --glob {glob!r}) in {where}")
    return sorted(found), skipped


def documents_of(path: Path, text_field: str) -> Iterator[tuple[Any, str]]:
    """The text of ``path`` as ``(document, block)`` pairs: a text file is one document
    (in blocks), a row file one document per row (see :mod:`scaletrain.data.rows`)."""
    if not is_row_file(path):
        yield from ((path, block) for block in text_blocks(path))
        return
    try:
        for number, text in enumerate(rows.documents(path, text_field)):
            for block in blocks_of(io.BytesIO(text.encode()), path):
                yield (path, number), block  # an empty row, like an empty file, has none
    except rows.RowError as error:
        raise PrepareError(str(error)) from None


def text_bytes(path: Path, text_field: str) -> int:
    """The UTF-8 bytes of text in ``path`` (a row file is read through for them)."""
    if not is_row_file(path):
        return path.stat().st_size
    return sum(len(block.encode()) for _, block in documents_of(path, text_field))


def text_blocks(path: Path) -> Iterator[str]:
    """The file's text in blocks (see :func:`blocks_of`)."""
    with open(path, "rb") as file:
        yield from blocks_of(file, path)


def blocks_of(file: BinaryIO, path: Path) -> Iterator[str]:
    """The text of ``file`` (of ``path``) in blocks of about :data:`BLOCK_BYTES`, each
    ending at a line break where there is one; :class:`PrepareError` where it turns out
    not to be text. A row's text goes through here too, so that it is cut, and encoded,
    exactly as the same text in a file."""
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    pending, offset = "", 0
    while True:
        data = file.read(BLOCK_BYTES)
        try:
            text = decoder.decode(data, final=not data)
        except UnicodeDecodeError as error:
            raise PrepareError(
                f"{path}: not UTF-8 text (byte {offset + error.start}); remove it, "
                "or choose the files with --glob"
            ) from None
        if "\0" in text:
            raise PrepareError(f"{path}: not text (a NUL character); remove it")
        offset += len(data)
        text = pending + text
        if not data:
            if text:
                yield text
            return
        cut = text.rfind("\n") + 1
        if cut == 0:  # no line break yet: wait for one, up to a limit
            if len(text) < 4 * BLOCK_BYTES:
                pending = text
                continue
            cut = len(text)
        yield text[:cut]
        pending = text[cut:]


# -- the fingerprint: what decides the output -----------------------------------------------


def input_records(files: list[Path]) -> list[dict[str, Any]]:
    records = []
    for path in files:
        stat = path.stat()
        records.append({"path": str(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return records


def fingerprint(settings: PrepareSettings, records: list[dict[str, Any]]) -> str:
    identity = {
        "format": shards.FORMAT,
        "version": shards.VERSION,
        "settings": asdict(settings),
        "inputs": records,
    }
    given = given_tokenizer_file(settings.tokenizer)
    if given is not None:  # the same directory with another tokenizer in it prepares anew
        identity["tokenizer_sha256"] = sha256_file(given)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def intact(directory: Path) -> bool:
    """Whether every file the directory's manifest names is there and complete."""
    try:
        manifest = shards.read_manifest(directory)
        for split in manifest.splits.values():
            for shard in split:
                shards.check_shard(shard, manifest.dtype)
        expected = manifest.raw.get("tokenizer_sha256")
        return expected is None or sha256_file(directory / TOKENIZER_FILE) == expected
    except (ShardError, OSError):
        return False


def difference(old: dict[str, Any], settings: PrepareSettings, records: list[dict]) -> str:
    """How an existing manifest differs from what this run would write, in words."""
    try:
        old_settings = PrepareSettings(**old["settings"])
    except (KeyError, TypeError):
        return "in another format"
    if old_settings != settings:
        return f"with {old_settings.describe()} (this run: {settings.describe()})"
    old_files = {r["path"]: r for r in old.get("inputs", {}).get("files", [])}
    new_files = {r["path"]: r for r in records}
    changed = sorted(p for p in old_files.keys() & new_files.keys() if old_files[p] != new_files[p])
    added, removed = sorted(new_files.keys() - old_files), sorted(old_files.keys() - new_files)
    for paths, what in ((changed, "changed"), (added, "new"), (removed, "gone")):
        if paths:
            return f"from other inputs ({len(paths)} file(s) {what} since, e.g. {paths[0]})"
    return "from other inputs"


def check_out_dir(out: Path, settings: PrepareSettings, records: list[dict], force: bool) -> str:
    """``"up to date"``, ``"prepare"``, or a :class:`PrepareError` for a directory that holds
    other prepared data (unless ``force``)."""
    if out.exists() and not out.is_dir():
        raise PrepareError(f"--out {out}: exists and is not a folder")
    if not shards.manifest_path(out).exists():
        return "prepare"
    try:
        old = json.loads(shards.manifest_path(out).read_text())
    except (OSError, ValueError):
        old = {}
    if old.get("fingerprint") == fingerprint(settings, records):
        return "up to date" if intact(out) else "prepare"
    if force:
        return "prepare"
    raise PrepareError(
        f"--out {out} holds data prepared {difference(old, settings, records)}; "
        "add --force to replace it, or choose another --out"
    )


# -- tokenizers -------------------------------------------------------------------------------


def train_bpe(blocks: Iterator[str], vocab_size: int):
    """A byte-level BPE tokenizer (Hugging Face ``tokenizers``) trained on ``blocks``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[END_OF_DOCUMENT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(blocks, trainer)
    # text that spells the end-of-document token is text, not a document boundary
    tokenizer.encode_special_tokens = True
    return tokenizer


def given_tokenizer_file(tokenizer: str) -> Path | None:
    """The ``tokenizer.json`` that ``--tokenizer`` names (a directory holding one, or the
    file); None for the tokenizers prepare makes itself."""
    if tokenizer in TOKENIZERS:
        return None
    path = Path(tokenizer).expanduser()
    return path / TOKENIZER_FILE if path.is_dir() else path


def load_given_tokenizer(path: Path, setting: str) -> tuple[Any, str]:
    """The tokenizer in ``path`` and its end-of-document token: the ``eos_token`` of the
    ``tokenizer_config.json`` beside it, else ``<|endoftext|>`` where it has that token."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises its own exception types
        raise PrepareError(f"--tokenizer {setting}: {path} is not a tokenizer ({error})") from None
    end = END_OF_DOCUMENT
    config = path.with_name("tokenizer_config.json")
    if config.is_file():
        eos = json.loads(config.read_text()).get("eos_token") or end
        end = eos["content"] if isinstance(eos, dict) else eos
    if tokenizer.token_to_id(end) is None:
        raise PrepareError(
            f"--tokenizer {setting}: it has no end-of-document token to end each document "
            f"with (no eos_token in tokenizer_config.json, no {END_OF_DOCUMENT})"
        )
    tokenizer.encode_special_tokens = True
    return tokenizer, end


# -- splits -----------------------------------------------------------------------------------


class ChunkSplits:
    """Assigns consecutive chunks to val, test and train (see the module's docstring)."""

    def __init__(self, val_fraction: float, test_fraction: float, seed: int) -> None:
        rng = random.Random(seed)
        self.val_rate = val_fraction
        self.test_rate = test_fraction / (1 - val_fraction)  # among the chunks val left
        self.val_phase, self.test_phase = rng.random(), rng.random()
        self.chunks = 0
        self.not_val = 0

    @staticmethod
    def takes(rate: float, phase: float, index: int) -> bool:
        return math.floor(rate * (index + 1) + phase) > math.floor(rate * index + phase)

    def next(self) -> str:
        index, self.chunks = self.chunks, self.chunks + 1
        if self.takes(self.val_rate, self.val_phase, index):
            return "val"
        index, self.not_val = self.not_val, self.not_val + 1
        return "test" if self.takes(self.test_rate, self.test_phase, index) else "train"


class SplitStream:
    """The corpus's token stream, chunk by chunk, into each split's shard writer."""

    def __init__(
        self,
        writers: dict[str, ShardWriter],
        token_bytes: np.ndarray,
        settings: PrepareSettings,
        chunk_tokens: int,
    ) -> None:
        self.writers = writers
        self.token_bytes = token_bytes
        self.assign = ChunkSplits(settings.val_fraction, settings.test_fraction, settings.seed)
        self.chunk_tokens = chunk_tokens
        self.split = ""
        self.room = 0  # tokens left in the current chunk
        self.bytes = dict.fromkeys(writers, 0)

    def write(self, tokens: np.ndarray) -> None:
        while len(tokens):
            if self.room == 0:
                self.split, self.room = self.assign.next(), self.chunk_tokens
            piece, tokens = tokens[: self.room], tokens[self.room :]
            self.writers[self.split].write(piece)
            self.bytes[self.split] += int(self.token_bytes[piece].sum())
            self.room -= len(piece)


# -- the whole preparation --------------------------------------------------------------------


def default_chunk_tokens(total_bytes: int) -> int:
    return max(1, min(MAX_CHUNK_TOKENS, math.ceil(total_bytes / 256)))


def prepare(
    inputs: list[str | Path],
    out: str | Path,
    settings: PrepareSettings | None = None,
    force: bool = False,
    progress: Any = None,
    on_start: Callable[[list[Path], list[Path]], None] | None = None,
) -> Prepared:
    """Prepare ``inputs`` (text files and folders) into ``out`` with ``settings``.

    Nothing is written where ``out`` already holds this data complete (``up_to_date``).
    ``progress`` is an optional ``rich.progress.Progress`` to show the passes over the
    text; ``on_start(files, skipped)`` is called once the inputs are known and before any
    work. Raises :class:`PrepareError` (one line) for unusable input; a failure leaves no
    file of this run behind and no manifest.
    """
    started = time.perf_counter()
    settings = settings or PrepareSettings()
    problems = settings.problems()
    if problems:
        raise PrepareError("; ".join(problems))
    out = Path(out).expanduser()
    files, skipped = find_files(inputs, settings.glob)
    records = input_records(files)
    if check_out_dir(out, settings, records, force) == "up to date":
        manifest = json.loads(shards.manifest_path(out).read_text())
        return Prepared(manifest, True, time.perf_counter() - started, skipped)
    total_bytes = sum(text_bytes(path, settings.text_field) for path in files)
    if total_bytes == 0:
        raise PrepareError(f"the corpus is empty: {len(files)} file(s) with no text")
    if on_start:
        on_start(files, skipped)

    def blocks(description: str) -> Iterator[tuple[Any, str]]:
        task = progress.add_task(description, total=total_bytes) if progress else None
        for path in files:
            for document, block in documents_of(path, settings.text_field):
                yield document, block
                if progress:
                    progress.advance(task, len(block.encode()))
        if progress:
            progress.update(task, completed=total_bytes)

    tokenizer, end_of_document = None, END_OF_DOCUMENT
    given = given_tokenizer_file(settings.tokenizer)
    if given is not None:
        tokenizer, end_of_document = load_given_tokenizer(given, settings.tokenizer)
    elif settings.tokenizer == "bpe":
        # the whole corpus is read (and checked to be text) before anything is written
        tokenizer = train_bpe((block for _, block in blocks("training BPE")), settings.vocab_size)

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    old_manifest = read_old_manifest(out)
    written: list[Path] = []
    writers: dict[str, ShardWriter] = {}
    try:
        # from here on the old manifest would no longer describe the directory's files
        shards.manifest_path(out).unlink(missing_ok=True)
        if tokenizer is not None:
            shards.write_bytes_atomically(out / TOKENIZER_FILE, tokenizer.to_str().encode())
            written.append(out / TOKENIZER_FILE)
        manifest = encode_and_write(
            out, files, settings, total_bytes, (tokenizer, end_of_document), blocks, writers
        )
        manifest["inputs"] = {"files": records, "total_bytes": total_bytes}
        manifest["fingerprint"] = fingerprint(settings, records)
        written += [path for writer in writers.values() for path in writer.written]
        shards.write_manifest(out, manifest)
    except BaseException:
        for writer in writers.values():
            writer.abort()
            written += writer.written
        for path in written:
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):  # another process may have written into it
                out.rmdir()
        raise
    remove_stale(out, old_manifest, manifest)
    return Prepared(manifest, False, time.perf_counter() - started, skipped)


def read_old_manifest(out: Path) -> dict[str, Any]:
    try:
        return json.loads(shards.manifest_path(out).read_text())
    except (OSError, ValueError):
        return {}


def encode_and_write(
    out: Path,
    files: list[Path],
    settings: PrepareSettings,
    total_bytes: int,
    tokenizer_and_end: tuple[Any, str],
    blocks: Callable[[str], Iterator[tuple[Any, str]]],
    writers: dict[str, ShardWriter],
) -> dict[str, Any]:
    """Encode every document, write the shards; the manifest's description of them."""
    tokenizer, end_of_document = tokenizer_and_end
    if tokenizer is None:
        vocab_size, end = BYTE_VOCAB_SIZE, BYTE_END_OF_DOCUMENT
        token_bytes = np.ones(vocab_size, dtype=np.int64)
    else:
        from scaletrain.data.codec import BPECodec

        vocab_size, end = tokenizer.get_vocab_size(), tokenizer.token_to_id(end_of_document)
        token_bytes = BPECodec(out / TOKENIZER_FILE).token_bytes().numpy()
    dtype = shards.token_dtype(vocab_size)
    for split in SPLITS:
        writers[split] = ShardWriter(out, split, dtype, settings.shard_tokens)
    chunk_tokens = settings.chunk_tokens or default_chunk_tokens(total_bytes)
    stream = SplitStream(writers, token_bytes, settings, chunk_tokens)
    end_token = np.array([end], dtype=np.int64)
    current = None
    for document, block in blocks("encoding"):
        if current is not None and document != current:
            stream.write(end_token)
        current = document
        if tokenizer is None:
            ids = np.frombuffer(block.encode(), dtype=np.uint8).astype(np.int64)
        else:
            # no special tokens: a given tokenizer's post-processor would add its BOS at
            # every block; documents are ended by the end-of-document token alone
            ids = np.asarray(tokenizer.encode(block, add_special_tokens=False).ids, dtype=np.int64)
        stream.write(ids)
    stream.write(end_token)
    for writer in writers.values():
        writer.close()

    counts = {split: writer.tokens for split, writer in writers.items()}
    wanted = {"val": settings.val_fraction, "test": settings.test_fraction, "train": 1}
    for split, fraction in wanted.items():
        if fraction > 0 and counts[split] == 0:
            raise PrepareError(
                f"the corpus has {sum(counts.values())} tokens, {stream.assign.chunks} "
                f"chunk(s) of {chunk_tokens}: too few to give {split} its share; give more "
                "text, a smaller --chunk-tokens, or --val-fraction 0 --test-fraction 0"
            )
    return {
        "format": shards.FORMAT,
        "version": shards.VERSION,
        "tokenizer": "bpe" if tokenizer is not None else "bytes",
        "vocab_size": vocab_size,
        "dtype": dtype.str,
        "end_of_document": end,
        "tokenizer_file": TOKENIZER_FILE if tokenizer is not None else None,
        "tokenizer_sha256": sha256_file(out / TOKENIZER_FILE) if tokenizer is not None else None,
        "chunk_tokens": chunk_tokens,
        "settings": asdict(settings),
        "splits": {
            split: {
                "tokens": writer.tokens,
                "bytes": stream.bytes[split],
                "shards": writer.shards,
            }
            for split, writer in writers.items()
        },
    }


def remove_stale(out: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Delete the files a replaced manifest named that the new one does not."""

    def named(manifest: dict[str, Any]) -> set[str]:
        files = {
            s["file"] for split in manifest.get("splits", {}).values() for s in split["shards"]
        }
        return files | ({manifest["tokenizer_file"]} if manifest.get("tokenizer_file") else set())

    try:
        stale = named(old) - named(new)
    except (KeyError, TypeError, AttributeError):
        return
    for name in stale:
        if "/" not in name and name != shards.MANIFEST:
            (out / name).unlink(missing_ok=True)
