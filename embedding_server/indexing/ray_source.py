"""``embedding-server embed --ray``'s input: rows (id, text) of CSV/TSV, JSON Lines, Parquet or text files, read by
Ray Data's file datasource from any filesystem pyarrow reads, parsed as the single-machine path parses them
(sources.py), each row with its id so that Ray Data's checkpointing can tell which rows are done.

The id is ``--id-column``'s value, else the row's number in its file (from 0), prefixed by the file's path under the
input folder and ``:`` when the input is a folder (``part-1.jsonl:41``): for one file, the ids equal the
single-machine path's."""

from __future__ import annotations

import csv
import io
import logging
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from ray.data.datasource import FileBasedDatasource

from .sources import FORMATS, check_columns, jsonl_records, parquet_records

log = logging.getLogger("embedding_server.indexing.ray")

EXTENSIONS = [suffix.lstrip(".") for suffix in FORMATS]  # a folder's files read as input; others are left out


def kind_of(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    return FORMATS.get("." + name.rsplit(".", 1)[-1], "text") if "." in name else "text"


def rows(f, path: str, column: str, id_column: str | None) -> Iterator[tuple[str, object]]:
    """(id without prefix, text) per row of the open file ``f`` (a text is None when missing or not a string)."""
    kind = kind_of(path)
    if kind == "parquet":
        yield from parquet_records(pq.ParquetFile(f), column, id_column, path)
        return
    stream = io.TextIOWrapper(io.BufferedReader(f), encoding="utf-8", newline="" if kind == "csv" else None)
    if kind == "text":
        for n, line in enumerate(stream):
            yield str(n), line.rstrip("\r\n")
    elif kind == "csv":
        csv.field_size_limit(1 << 30)
        reader = csv.DictReader(stream, dialect="excel-tab" if path.lower().endswith(".tsv") else "excel")
        check_columns(list(reader.fieldnames or []), column, id_column, path)
        for n, row in enumerate(reader):
            yield (row[id_column] if id_column else str(n)), row.get(column)
    else:
        yield from jsonl_records(stream, column, id_column, path)


def _table(ids: list[str], texts: list, column: str, path: str, report: bool = True) -> pa.Table:
    try:
        text_array = pa.array(texts, pa.string())
    except (UnicodeEncodeError, pa.ArrowException):
        clean = []
        for key, text in zip(ids, texts):
            try:
                text is None or text.encode("utf-8")
                clean.append(text)
            except UnicodeEncodeError:  # a lone surrogate (a JSON "\ud800" escape): no Arrow string holds it
                if report:
                    log.warning("%s: row %s is not valid Unicode text (it holds a lone UTF-16 surrogate); read as "
                                "empty", path, key)
                clean.append(None)
        text_array = pa.array(clean, pa.string())
    return pa.table({"id": pa.array(ids, pa.string()), column: text_array})


class TextRows(FileBasedDatasource):
    """Blocks of ``block_rows`` rows with columns ``id`` and ``column``, file by file."""

    def __init__(self, paths: list[str], root: str, column: str, id_column: str | None, filesystem,
                 block_rows: int = 1024, prefix_ids: bool = False):
        super().__init__(paths, filesystem=filesystem)
        self.root, self.column, self.id_column = root.rstrip("/"), column, id_column
        self.block_rows, self.prefix_ids = block_rows, prefix_ids

    def _open_input_source(self, filesystem, path: str, **open_args):
        if kind_of(path) == "parquet":  # random access (the footer first)
            return filesystem.open_input_file(path)
        return super()._open_input_source(filesystem, path, **open_args)

    def _read_stream(self, f, path: str) -> Iterator[pa.Table]:
        prefix = ""
        if self.prefix_ids:
            prefix = (path[len(self.root):] if path.startswith(self.root) else path).lstrip("/") + ":"
        ids, texts = [], []
        for key, text in rows(f, path, self.column, self.id_column):
            ids.append(key if self.id_column else prefix + key)
            texts.append(text)
            if len(ids) >= self.block_rows:
                yield _table(ids, texts, self.column, path)
                ids, texts = [], []
        if ids:
            yield _table(ids, texts, self.column, path)
