"""Corpora as rows: JSON Lines, gzipped JSON Lines and Parquet give the same shards as the
same texts in plain files, stream in flat memory, and name the file and row of a row
they cannot use."""

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scaletrain.data.preparation import PrepareSettings, prepare
from tests.helpers import CLI_ENV
from tests.test_prepare import errors_of

DOCUMENTS = [
    "def add(a, b):\n    return a + b\n" * 30,
    "",  # an empty row is no document, as an empty file is none
    "Tokens, windows and shards: naïve café ünïcode.\n" * 20,
    "for i in range(10):\n    print(i * i)\n" * 40,
    "one line without a break at the end",
    "blank lines and indents\n\n   then text without a final break",
] + [f"document {i}: " + "lorem ipsum dolor " * (i % 7 + 1) + "\n" for i in range(40)]


def as_files(directory: Path, texts: list[str]) -> Path:
    directory.mkdir(parents=True)
    for number, text in enumerate(texts):
        (directory / f"doc{number:04d}.txt").write_text(text)
    return directory


def as_jsonl(path: Path, texts: list[str], field: str = "text") -> Path:
    lines = "".join(json.dumps({"id": n, field: text}) + "\n" for n, text in enumerate(texts))
    if path.name.endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as file:
            file.write(lines)
    else:
        path.write_text(lines)
    return path


def as_parquet(path: Path, texts: list[str], row_group_size: int = 8) -> Path:
    table = pa.table({"id": list(range(len(texts))), "text": texts})
    pq.write_table(table, path, row_group_size=row_group_size)  # several row groups
    return path


def shard_bytes(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.bin"))}


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_rows_give_the_shards_the_same_texts_as_files_give(tmp_path, tokenizer):
    settings = PrepareSettings(tokenizer=tokenizer, vocab_size=256 if tokenizer == "bytes" else 300)
    plain = prepare([as_files(tmp_path / "files", DOCUMENTS)], tmp_path / "plain", settings)
    rows = {
        "jsonl": as_jsonl(tmp_path / "corpus.jsonl", DOCUMENTS),
        "jsonl.gz": as_jsonl(tmp_path / "corpus.jsonl.gz", DOCUMENTS),
        "parquet": as_parquet(tmp_path / "corpus.parquet", DOCUMENTS),
    }
    for kind, path in rows.items():
        out = tmp_path / kind
        prepared = prepare([path], out, settings)
        assert prepared.manifest["splits"] == plain.manifest["splits"], kind
        assert shard_bytes(out) == shard_bytes(tmp_path / "plain"), kind
        if tokenizer == "bpe":
            assert (out / "tokenizer.json").read_text() == (
                tmp_path / "plain" / "tokenizer.json"
            ).read_text()


def test_a_folder_mixes_text_files_and_row_files(tmp_path):
    folder = as_files(tmp_path / "mixed", DOCUMENTS[:3])
    as_parquet(folder / "more.parquet", DOCUMENTS[3:])
    as_jsonl(folder / "notes.jsonl.gz", ["a note\n"] * 30)
    settings = PrepareSettings(tokenizer="bytes", vocab_size=256)
    prepared = prepare([folder], tmp_path / "out", settings)
    texts = [text for text in [*DOCUMENTS, *["a note\n"] * 30] if text]
    total = sum(len(text.encode()) for text in texts)
    assert prepared.manifest["inputs"]["total_bytes"] == total
    # every document's bytes, and its end-of-document byte
    assert sum(split["tokens"] for split in prepared.manifest["splits"].values()) == total + len(
        texts
    )


def test_the_text_field_is_chosen_with_text_field(tmp_path, capsys):
    path = as_jsonl(tmp_path / "c.jsonl", DOCUMENTS, field="content")
    out = tmp_path / "out"
    code, lines = errors_of(capsys, str(path), "--out", str(out))
    assert code == 2 and lines == [
        f"error: {path}: line 1 has no field 'text' (its fields: content, id); "
        "name the text's field with --text-field"
    ]
    assert not out.exists()
    from scaletrain import prepare as prepare_cli

    prepare_cli.main([str(path), "--out", str(out), "--text-field", "content"])
    assert "train with: data=tokens" in capsys.readouterr().out


def test_unusable_rows_are_one_line_naming_the_file_and_row(tmp_path, capsys):
    bad = {
        "wrong_type.jsonl": '{"text": "fine"}\n{"text": 7}\n',
        "not_json.jsonl": '{"text": "fine"}\n{"text": \n',
        "not_an_object.jsonl": '["text"]\n',
    }
    for name, content in bad.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 not really parquet")
    as_parquet(tmp_path / "numbers.parquet", DOCUMENTS).unlink()
    pq.write_table(pa.table({"text": [1, 2, 3]}), tmp_path / "numbers.parquet")
    whole = gzip.compress(b'{"text": "fine"}\n' * 1000)
    (tmp_path / "truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    expected = {
        "wrong_type.jsonl": "line 2: field 'text' is int, not text",
        "not_json.jsonl": "line 2: not JSON",
        "not_an_object.jsonl": "line 1 is not a JSON object",
        "corrupt.parquet": "not a readable Parquet file",
        "numbers.parquet": "column 'text' is int64, not text",
        "truncated.jsonl.gz": "unreadable after line",
    }
    for name, message in expected.items():
        out = tmp_path / f"out-{name}"
        code, lines = errors_of(capsys, str(tmp_path / name), "--out", str(out))
        assert code == 2 and len(lines) == 1, (name, lines)
        assert lines[0].startswith(f"error: {tmp_path / name}: {message}"), (name, lines)
        assert not out.exists()


# VmHWM: this process's peak resident memory (getrusage's maxrss would include the
# forking test process's, which Linux carries over fork and exec)
PEAK_RSS = """
import sys
from pathlib import Path
from scaletrain.data.preparation import PrepareSettings, prepare
prepare([sys.argv[1]], sys.argv[2], PrepareSettings(tokenizer="bytes", vocab_size=256))
status = Path("/proc/self/status").read_text().splitlines()
print(next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")))
"""


@pytest.mark.slow  # prepares 30 MB of rows in a subprocess
@pytest.mark.parametrize("kind", ["jsonl.gz", "parquet"])
def test_memory_stays_flat_as_the_corpus_grows_tenfold(tmp_path, kind):
    document = "x = [i * i for i in range(100)]  # a line of code\n" * 60  # 3 KB
    peaks = {}
    for scale in (1, 10):
        texts = [document] * (1000 * scale)  # 3 MB, then 30 MB of text
        path = tmp_path / f"c{scale}.{kind}"
        if kind == "parquet":
            as_parquet(path, texts, row_group_size=500)
        else:
            as_jsonl(path, texts)
        done = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, str(path), str(tmp_path / f"out{scale}")],
            env=CLI_ENV,
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[scale] = int(done.stdout.split()[-1])
    assert peaks[10] <= 1.1 * peaks[1], peaks
