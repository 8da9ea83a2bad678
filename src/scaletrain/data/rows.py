"""Corpora kept as rows, one document per row: JSON Lines (``.jsonl``, gzipped
``.jsonl.gz``) and Parquet (``.parquet``), the text in one field (``text`` by default).

Rows are streamed, so memory stays flat however large the file: JSON Lines line by line
(Python's ``json`` and ``gzip``), Parquet one record batch of the text column at a time
(pyarrow, which reads a row group's column without the others; Hugging Face ``datasets``
would add a large dependency and, unless streaming, a copy of the corpus in its Arrow
cache on disk). A row that cannot
be used is a :class:`RowError` naming the file and the row (Parquet: its row group).
"""

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

ROW_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet")
PARQUET_BATCH_ROWS = 1024


class RowError(ValueError):
    """A row file that cannot be read as documents; the message is one line."""


def is_row_file(path: Path) -> bool:
    return path.name.endswith(ROW_SUFFIXES)


def documents(path: Path, field: str) -> Iterator[str]:
    """The text of each row of ``path``, in order."""
    if path.name.endswith(".parquet"):
        yield from parquet_documents(path, field)
    else:
        yield from jsonl_documents(path, field)


def row_text(path: Path, where: str, row: object, field: str) -> str:
    if not isinstance(row, dict):
        raise RowError(f"{path}: {where} is not a JSON object; each line must be one")
    if field not in row:
        fields = ", ".join(sorted(row)) or "none"
        raise RowError(
            f"{path}: {where} has no field {field!r} (its fields: {fields}); "
            "name the text's field with --text-field"
        )
    text = row[field]
    if not isinstance(text, str):
        raise RowError(f"{path}: {where}: field {field!r} is {type(text).__name__}, not text")
    if "\0" in text:
        raise RowError(f"{path}: {where}: field {field!r} holds a NUL character; remove it")
    return text


def jsonl_documents(path: Path, field: str) -> Iterator[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    number = 0
    try:
        with opener(path, "rt", encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as error:
                    raise RowError(f"{path}: line {number}: not JSON ({error})") from None
                yield row_text(path, f"line {number}", row, field)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as error:
        raise RowError(f"{path}: unreadable after line {number} ({error})") from None


def parquet_documents(path: Path, field: str) -> Iterator[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise RowError(f"{path}: not a readable Parquet file ({error})") from None
    names = table.schema_arrow.names
    if field not in names:
        raise RowError(
            f"{path}: has no column {field!r} (its columns: {', '.join(names) or 'none'}); "
            "name the text's column with --text-field"
        )
    kind = table.schema_arrow.field(field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise RowError(f"{path}: column {field!r} is {kind}, not text")
    for group in range(table.num_row_groups):
        try:
            batches = table.iter_batches(PARQUET_BATCH_ROWS, row_groups=[group], columns=[field])
            for batch in batches:
                for text in batch.column(0).to_pylist():
                    if text is None:
                        raise RowError(f"{path}: row group {group}: a row has no {field!r}")
                    yield text
        except (OSError, pa.ArrowException) as error:
            raise RowError(f"{path}: row group {group} is unreadable ({error})") from None
