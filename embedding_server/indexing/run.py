"""The indexing loop: rows in chunks, each chunk's texts in requests kept in flight, finished chunks stored, the
output assembled at the end. Memory holds at most two chunks of rows and their vectors, whatever the input size."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import deque
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from .sources import SourceError, count, rows
from .store import ChunkStore

CHUNK_ROWS = 2048


@dataclass
class Summary:
    rows: int  # vectors written
    skipped: int  # empty rows left out
    seconds: float  # from the model being ready to the output in place
    resumed_chunks: int

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """A tqdm bar on a terminal; otherwise a plain line every ``every`` seconds (rows, rows/s, ETA)."""

    def __init__(self, total: int | None, every: float = 10.0, stream=sys.stderr):
        self.total, self.every, self.stream, self.done = total, every, stream, 0
        self.started = self.last = time.monotonic()
        self.bar = None
        if stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rows", file=stream, smoothing=0.1)

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            eta = f", ETA {(self.total - self.done) / rate:.0f} s" if self.total and rate else ""
            of = f"/{self.total}" if self.total else ""
            print(f"embedded {self.done}{of} rows, {rate:.0f} rows/s{eta}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _chunks(source: Path, column: str, id_column: str | None):
    stream = rows(source, column, id_column)
    for k in range(sys.maxsize):
        chunk = list(islice(stream, CHUNK_ROWS))
        if not chunk:
            return
        yield k, chunk


async def index(source: Path, out: Path, backend, column: str = "text", id_column: str | None = None,
                strict: bool = False, progress: Progress | None = None) -> Summary:
    """Embed every row of ``source`` with ``backend`` into ``out`` (see store.py); resumes a stopped run."""
    model = await backend.start()
    started = time.monotonic()  # throughput counts embedding, not loading the model
    stat = source.stat()
    signature = {"input": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                 "column": column, "id_column": id_column, "model": model, "strict": strict}
    store = ChunkStore(out, signature)
    progress = progress or Progress(count(source))
    requests = asyncio.Semaphore(backend.concurrency)
    skipped = resumed = 0

    async def one_request(texts: list[str]) -> np.ndarray:
        async with requests:
            return await backend.embed(texts)

    async def one_chunk(k: int, chunk: list[tuple[str, str | None]]) -> int:
        keep = [(key, text) for key, text in chunk if text is not None and text.strip()]
        if strict and len(keep) < len(chunk):
            empty = next(key for key, text in chunk if text is None or not text.strip())
            raise SourceError(f"{source}: row {empty} has no text in column '{column}' (--strict)")
        texts = [text for _, text in keep]
        size = backend.request_size
        parts = await asyncio.gather(*(one_request(texts[i:i + size]) for i in range(0, len(texts), size)))
        vectors = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
        store.write(k, [key for key, _ in keep], vectors, len(chunk) - len(keep))
        progress.update(len(chunk))
        return len(chunk) - len(keep)

    pending: deque[asyncio.Task] = deque()
    try:
        for k, chunk in _chunks(source, column, id_column):
            if store.done(k):
                skipped += store.skipped(k)
                resumed += 1
                progress.update(len(chunk))
                continue
            pending.append(asyncio.ensure_future(one_chunk(k, chunk)))
            if len(pending) >= 2:  # two chunks in flight: the next one's requests queue behind this one's
                skipped += await pending.popleft()
        while pending:
            skipped += await pending.popleft()
    except BaseException:
        store.discard_if_empty()
        raise
    finally:
        for task in pending:
            task.cancel()
        progress.close()
    written = store.assemble()
    return Summary(written, skipped, time.monotonic() - started, resumed)
