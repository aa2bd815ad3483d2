"""Rows (id, text) streamed from CSV, JSON Lines, Parquet or plain text, and their count (for progress)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

FORMATS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
           ".txt": "text"}


class SourceError(Exception):
    """The input cannot be read as asked (missing file or column, bad format); the message says what to do."""


def source_format(path: Path) -> str:
    """The input's format from its suffix (unknown suffixes: plain text, one input per line)."""
    return FORMATS.get(path.suffix.lower(), "text")


def _csv_reader(f, path: Path):
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    csv.field_size_limit(1 << 30)
    return csv.DictReader(f, dialect=dialect)


def check_columns(columns: list[str], column: str, id_column: str | None, path) -> None:
    """A SourceError naming the columns there are when ``column`` or ``id_column`` is not among them."""
    for name in filter(None, (column, id_column)):
        if name not in columns:
            raise SourceError(f"{path}: no column '{name}' (columns: {', '.join(columns) or 'none'}); "
                              "choose one with --column / --id-column")


def rows(path: Path, column: str = "text", id_column: str | None = None) -> Iterator[tuple[str, str | None]]:
    """(id, text) per row; the id is ``id_column``'s value, else the row's number (from 0). A missing or
    non-string text is None (an empty row)."""
    kind = source_format(path)
    try:
        if kind == "text":
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f):
                    yield str(n), line.rstrip("\r\n")
        elif kind == "csv":
            with path.open(encoding="utf-8", newline="") as f:
                reader = _csv_reader(f, path)
                check_columns(list(reader.fieldnames or []), column, id_column, path)
                for n, row in enumerate(reader):
                    yield (row[id_column] if id_column else str(n)), row.get(column)
        elif kind == "jsonl":
            yield from _jsonl(path, column, id_column)
        else:
            yield from _parquet(path, column, id_column)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{path}: cannot read it: {exc}") from None


def _jsonl(path: Path, column: str, id_column: str | None):
    with path.open(encoding="utf-8") as f:
        yield from jsonl_records(f, column, id_column, path)


def jsonl_records(lines, column: str, id_column: str | None, path) -> Iterator[tuple[str, str | None]]:
    """(id, text) per JSON object line of ``lines``; blank lines skipped, the first object's columns checked."""
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise SourceError(f"{path}: line {n + 1} is not JSON: {exc}") from None
        if not isinstance(record, dict):
            raise SourceError(f"{path}: line {n + 1} is not a JSON object")
        if n == 0:
            check_columns(list(record), column, id_column, path)
        text = record.get(column)
        yield (str(record.get(id_column)) if id_column else str(n)), (text if isinstance(text, str) else None)


def _parquet(path: Path, column: str, id_column: str | None):
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise SourceError("Parquet needs pyarrow: pip install 'embedding-server[index]' (or pyarrow)") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow's errors: one line
        raise SourceError(f"{path}: not a Parquet file: {exc}") from None
    yield from parquet_records(table, column, id_column, path)


def parquet_records(table, column: str, id_column: str | None, path) -> Iterator[tuple[str, str | None]]:
    """(id, text) per row of an open ``pyarrow.parquet.ParquetFile``, its columns checked first."""
    check_columns(table.schema_arrow.names, column, id_column, path)
    n = 0
    for batch in table.iter_batches(batch_size=4096, columns=[c for c in (column, id_column) if c]):
        texts = batch.column(column).to_pylist()
        ids = batch.column(id_column).to_pylist() if id_column else range(n, n + len(texts))
        for key, text in zip(ids, texts):
            yield str(key), (text if isinstance(text, str) else None)
        n += len(texts)


def count(path: Path) -> int | None:
    """Rows in the input (a streaming pass; Parquet from its metadata), or None if it cannot be counted."""
    kind = source_format(path)
    try:
        if kind == "parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        if kind == "csv":
            with path.open(encoding="utf-8", newline="") as f:
                return sum(1 for _ in _csv_reader(f, path))
        with path.open("rb") as f:
            return sum(1 for line in f if kind == "text" or line.strip())
    except Exception:  # noqa: BLE001 - progress without a total
        return None
