"""``python -m scaletrain.prepare``: text files to token shards, a manifest, and one-line
errors that leave nothing half-written."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from scaletrain import prepare as prepare_cli
from scaletrain.data.codec import BPECodec
from scaletrain.data.preparation import ChunkSplits, PrepareSettings, prepare
from scaletrain.data.shards import HEADER, MAGIC, read_manifest

TEXTS = {
    "a.txt": "def add(a, b):\n    return a + b\n" * 40,
    "notes/b.md": "Tokens, windows and shards: naïve café ünïcode.\n" * 30,
    "notes/deep/c.py": "for i in range(10):\n    print(i * i)\n" * 50,
}


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A folder of three text files, a hidden one and a binary one (both skipped)."""
    root = tmp_path / "corpus"
    for name, text in TEXTS.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / ".hidden.txt").write_text("not part of the corpus\n")
    (root / "image.bin").write_bytes(bytes(range(256)) * 4)
    return root


def split_tokens(directory: Path, split: str) -> np.ndarray:
    manifest = read_manifest(directory)
    parts = []
    for shard in manifest.splits[split]:
        raw = shard.path.read_bytes()
        magic, version, itemsize, count = HEADER.unpack(raw[: HEADER.size])
        assert (magic, version, itemsize, count) == (MAGIC, 1, 2, shard.tokens)
        parts.append(np.frombuffer(raw[HEADER.size :], dtype="<u2"))
    return np.concatenate(parts) if parts else np.zeros(0, dtype="<u2")


def stream_of(directory: Path) -> np.ndarray:
    """The corpus's whole token stream, put back together from the splits' chunks as the
    split rule assigned them."""
    raw = json.loads((directory / "manifest.json").read_text())
    settings = PrepareSettings(**raw["settings"])
    splits = {split: list(split_tokens(directory, split)) for split in ("train", "val", "test")}
    total = sum(map(len, splits.values()))
    assign = ChunkSplits(settings.val_fraction, settings.test_fraction, settings.seed)
    stream, chunk = [], raw["chunk_tokens"]
    while len(stream) < total:
        split = assign.next()
        stream += splits[split][:chunk]
        del splits[split][:chunk]
    return np.array(stream)


def file_times(directory: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in sorted(directory.iterdir())}


def test_bytes_shards_hold_every_file_and_its_end_of_document_byte(corpus, tmp_path):
    out = tmp_path / "bytes"
    prepared = prepare([corpus], out, PrepareSettings("bytes", 256, shard_tokens=1000))
    manifest = prepared.manifest
    assert not prepared.up_to_date and prepared.skipped == [corpus / "image.bin"]
    assert (manifest["format"], manifest["version"]) == ("scaletrain-tokens", 1)
    assert (manifest["tokenizer"], manifest["vocab_size"], manifest["dtype"]) == (
        "bytes",
        256,
        "<u2",
    )
    assert manifest["tokenizer_sha256"] is None and not (out / "tokenizer.json").exists()
    files = sorted(corpus / name for name in TEXTS)
    assert [f["path"] for f in manifest["inputs"]["files"]] == [str(p) for p in files]
    assert [f["bytes"] for f in manifest["inputs"]["files"]] == [p.stat().st_size for p in files]
    expected = b"".join(path.read_bytes() + b"\0" for path in files)
    assert bytes(stream_of(out).astype(np.uint8)) == expected
    splits = manifest["splits"]
    assert sum(s["tokens"] for s in splits.values()) == len(expected) == 4693
    assert all(s["bytes"] == s["tokens"] for s in splits.values())  # one byte per token
    assert [s["tokens"] for s in splits["train"]["shards"]] == [1000] * 4 + [199]
    # val and test: 5% each, within one chunk
    chunk = manifest["chunk_tokens"]
    for split in ("val", "test"):
        assert abs(splits[split]["tokens"] - 0.05 * len(expected)) <= chunk


def test_bpe_shards_decode_to_the_files(corpus, tmp_path):
    out = tmp_path / "bpe"
    manifest = prepare([corpus], out, PrepareSettings("bpe", 300)).manifest
    codec = BPECodec(out / "tokenizer.json")
    assert manifest["vocab_size"] == codec.vocab_size <= 300
    assert (
        manifest["tokenizer_sha256"]
        == hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest()
    )
    stream = stream_of(out)
    end = manifest["end_of_document"]
    assert codec.tokenizer.id_to_token(end) == "<|endoftext|>"
    documents = np.split(stream, np.flatnonzero(stream == end) + 1)[:-1]
    assert [codec.decode(doc[:-1].tolist()) for doc in documents] == [
        TEXTS[name] for name in sorted(TEXTS)
    ]
    total_bytes = sum(len(text.encode()) for text in TEXTS.values())
    assert sum(split["bytes"] for split in manifest["splits"].values()) == total_bytes
    assert len(stream) < 0.6 * total_bytes  # 44 merges already shorten this repetitive text


def test_a_second_run_is_up_to_date_and_writes_nothing(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(corpus), "--out", str(out), "--tokenizer", "bpe", "--vocab-size", "300"]
    prepare_cli.main(args)
    assert "train with: data=tokens data.dir=" in capsys.readouterr().out
    before = file_times(out)
    prepare_cli.main(args)
    assert capsys.readouterr().out == f"{out} is up to date: nothing written\n"
    assert file_times(out) == before


def errors_of(capsys, *argv: str) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as stop:
        prepare_cli.main(list(argv))
    return stop.value.code, capsys.readouterr().err.splitlines()


def test_bad_input_is_one_line_and_writes_nothing(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "blank.txt").write_text("")
    cases = {
        "no such file or folder": [str(tmp_path / "nope.txt")],
        "no text files (matching --glob '*')": [str(tmp_path / "empty")],
        "the corpus is empty": [str(tmp_path / "blank.txt")],
        "not a UTF-8 text file": [str(corpus / "image.bin")],
        "the following arguments are required: inputs": [],
        "--vocab-size 100: byte-level BPE needs at least 257": [str(corpus), "--vocab-size=100"],
    }
    for message, inputs in cases.items():
        code, lines = errors_of(capsys, *inputs, "--out", str(out))
        assert code == 2 and len(lines) == 1 and message in lines[0], (message, lines)
        assert lines[0].startswith("error: ")
        assert not out.exists()


def test_a_file_that_stops_being_text_leaves_nothing_behind(tmp_path, capsys):
    text = tmp_path / "late.txt"
    text.write_bytes(b"looks like text\n" * 1000 + b"\xff\xfe")  # beyond the first 8 KiB
    code, lines = errors_of(capsys, str(text), "--out", str(tmp_path / "out"), "--tokenizer=bytes")
    assert code == 2 and lines == [
        f"error: {text}: not UTF-8 text (byte 16000); remove it, or choose the files with --glob"
    ]
    assert not (tmp_path / "out").exists()


def test_other_settings_are_refused_unless_forced(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    prepare_cli.main([str(corpus), "--out", str(out), "--tokenizer=bytes", "--shard-tokens=500"])
    before = file_times(out)
    code, lines = errors_of(capsys, str(corpus), "--out", str(out), "--vocab-size=300")
    assert code == 2 and lines == [
        f"error: --out {out} holds data prepared with --tokenizer bytes --vocab-size 256 "
        "--shard-tokens 500 (this run: --tokenizer bpe --vocab-size 300); add --force to "
        "replace it, or choose another --out"
    ]
    assert file_times(out) == before
    (corpus / "a.txt").write_text("changed\n" * 100)
    code, lines = errors_of(
        capsys, str(corpus), "--out", str(out), "--tokenizer=bytes", "--shard-tokens=500"
    )
    assert code == 2 and "from other inputs (1 file(s) changed since, e.g." in lines[0]

    prepare_cli.main([str(corpus), "--out", str(out), "--vocab-size=300", "--force"])
    manifest = read_manifest(out)
    assert manifest.tokenizer == "bpe"
    # the bytes run's extra shards are gone; only what the new manifest names is left
    named = {shard.path.name for split in manifest.splits.values() for shard in split}
    assert {p.name for p in out.iterdir()} == named | {"manifest.json", "tokenizer.json"}
