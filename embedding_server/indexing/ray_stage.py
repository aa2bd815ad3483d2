"""The Ray Data stage: the project's engine as a callable class for ``Dataset.map_batches``.

    import ray
    from embedding_server.indexing.ray_stage import Embedder

    ds = ray.data.read_parquet("s3://bucket/docs/")
    ds = ds.map_batches(Embedder, fn_constructor_kwargs={"model": "bge-m3", "models_dir": "s3://bucket/models",
                                                         "outputs": ["dense", "sparse"]},
                        concurrency=4, num_cpus=8, batch_size=1024, batch_format="pyarrow")
    ds.write_parquet("s3://bucket/vectors/")

Each actor loads the model once, through the same engine the server runs (the same ``EMBED_*`` settings, dtype,
padding-free forward and BGE-M3 heads), with as many torch threads as the CPUs Ray gave the actor. It reads the text
``column`` of each batch and adds ``embedding`` (L2-normalised float32, as ``/api/embed`` returns it) and, when asked,
``sparse_indices``/``sparse_values`` and ``colbert`` (BGE-M3's heads, as ``/api/encode``); every other column is kept.
Batches may be Arrow tables (``batch_format="pyarrow"``, recommended: vectors become fixed-size lists that Parquet
stores as plain lists), dicts of NumPy arrays (Ray's default) or pandas frames; the output has the input's kind.

A row that cannot be embedded (no text, or text the tokenizer refuses) is logged and left out of the output, or, with
``strict=True``, fails the batch (and so the job) naming the row. This module needs no Ray to import or to run a batch.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("embedding_server.indexing.ray")

OUTPUTS = ("dense", "sparse", "colbert")
REQUEST_SIZE, IN_FLIGHT = 512, 2  # as the in-process indexer: two requests in flight keep the model's worker busy
REPORTED_ROWS = 20  # rows skipped that an actor logs one by one; past that, only counted


class RowError(ValueError):
    """A row that cannot be embedded, with ``strict``: the message names the row and why."""


# ----- the model folder on a cluster ----------------------------------------------------------------------------
def default_cache_dir() -> Path:
    return Path(os.environ.get("EMBEDDING_SERVER_CACHE", Path.home() / ".cache" / "embedding-server"))


def stage_models(models_dir: str | os.PathLike | None, model: str | None,
                 cache_dir: str | os.PathLike | None = None) -> tuple[str | None, bool]:
    """The local models folder to load from, and whether this call copied anything.

    A local path (or None) is used as it is: every node must see it (a shared filesystem). A URI that pyarrow reads
    (``s3://``, ``gs://``, ``hdfs://``, ``file://``) is the models folder in an object store: ``<uri>/<model>`` is
    copied once per node into ``<cache_dir>/models/<hash of uri>/<model>`` (under a file lock, so that the node's
    other actors wait for that copy instead of making their own; renamed into place when complete, so that a copy cut
    short is never used). ``model`` None: the ``EMBED_MODEL`` setting's folder."""
    if models_dir is None or "://" not in str(models_dir):
        return (None if models_dir is None else str(models_dir)), False
    import pyarrow.fs as pafs

    from ..settings import Settings

    uri = str(models_dir).rstrip("/")
    name = model or Settings().model
    root = Path(cache_dir or default_cache_dir()) / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    with open(root / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_dir():
            return str(root), False
        filesystem, base = pafs.FileSystem.from_uri(uri)
        source = f"{base}/{name}"
        if filesystem.get_file_info(source).type != pafs.FileType.Directory:
            return str(root), False  # not in the store: the registry says so (or falls back to the embedded model)
        started, partial = time.monotonic(), root / f".{name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        pafs.copy_files(source, str(partial), source_filesystem=filesystem,
                        destination_filesystem=pafs.LocalFileSystem(), use_threads=True)
        os.replace(partial, target)
        size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
        log.info("model %s copied from %s to %s (%.0f MB, %.1f s)", name, uri, target, size / 2**20,
                 time.monotonic() - started)
        return str(root), True


def assigned_cpus() -> int | None:
    """The CPUs Ray gave this actor or task (rounded, at least 1), None outside Ray."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # noqa: BLE001 - no Ray, or not in a worker
        return None
    return max(1, round(cpus)) if cpus else None


# ----- batches of any kind -----------------------------------------------------------------------------------------
def _column(batch, name: str) -> list:
    import pyarrow as pa

    if isinstance(batch, (pa.Table, pa.RecordBatch)):
        if name not in batch.schema.names:
            raise KeyError(name)
        return batch.column(name).to_pylist()
    values = batch[name]
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _names(batch) -> list[str]:
    import pyarrow as pa

    if isinstance(batch, (pa.Table, pa.RecordBatch)):
        return list(batch.schema.names)
    return list(batch.keys()) if isinstance(batch, dict) else list(batch.columns)


@dataclass
class Embedded:
    """A batch's outputs for the rows kept (in row order), and the rows skipped with why."""

    keep: np.ndarray  # bool per input row
    dense: np.ndarray | None = None  # (kept, dim) float32
    sparse: list[tuple[np.ndarray, np.ndarray]] | None = None
    colbert: list[np.ndarray] | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row in the batch, reason)


def _without(batch, name: str):
    import pyarrow as pa

    if isinstance(batch, (pa.Table, pa.RecordBatch)):
        return batch.drop_columns([name])
    if isinstance(batch, dict):
        return {k: v for k, v in batch.items() if k != name}
    return batch.drop(columns=[name])


def _with_outputs(batch, done: Embedded):
    """``batch`` without the skipped rows, with the output columns added; of the same kind as ``batch``."""
    import pyarrow as pa

    if isinstance(batch, pa.RecordBatch):
        batch = pa.Table.from_batches([batch])
    if isinstance(batch, pa.Table):
        table = batch if done.keep.all() else batch.filter(pa.array(done.keep))
        for name, array in _arrow_columns(done):
            table = table.append_column(name, array) if name not in table.schema.names else \
                table.set_column(table.schema.get_field_index(name), name, array)
        return table
    columns = {}
    if done.dense is not None:
        columns["embedding"] = done.dense
    if done.sparse is not None:
        columns["sparse_indices"] = _objects([ids for ids, _ in done.sparse])
        columns["sparse_values"] = _objects([weights for _, weights in done.sparse])
    if done.colbert is not None:
        columns["colbert"] = _objects(done.colbert)
    if isinstance(batch, dict):
        out = {name: np.asarray(values)[done.keep] for name, values in batch.items()}
        out.update(columns)
        return out
    frame = batch[done.keep].reset_index(drop=True)  # pandas
    for name, values in columns.items():
        frame[name] = list(values)
    return frame


def _objects(arrays: list) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    out[:] = arrays
    return out


def _arrow_columns(done: Embedded):
    import pyarrow as pa

    if done.dense is not None:
        dense = np.ascontiguousarray(done.dense, np.float32)
        yield "embedding", pa.FixedSizeListArray.from_arrays(pa.array(dense.reshape(-1), pa.float32()),
                                                             dense.shape[1] if dense.ndim == 2 else 0)
    if done.sparse is not None:
        offsets = pa.array(np.cumsum([0, *(len(ids) for ids, _ in done.sparse)]), pa.int32())
        ids = np.concatenate([ids for ids, _ in done.sparse] or [np.zeros(0)]).astype(np.int64)
        weights = np.concatenate([w for _, w in done.sparse] or [np.zeros(0)]).astype(np.float32)
        yield "sparse_indices", pa.ListArray.from_arrays(offsets, pa.array(ids, pa.int64()))
        yield "sparse_values", pa.ListArray.from_arrays(offsets, pa.array(weights, pa.float32()))
    if done.colbert is not None:
        dim = next((v.shape[1] for v in done.colbert if v.ndim == 2), 0)
        offsets = pa.array(np.cumsum([0, *(len(v) for v in done.colbert)]), pa.int32())
        flat = np.concatenate([v.reshape(-1) for v in done.colbert] or [np.zeros(0)]).astype(np.float32)
        yield "colbert", pa.ListArray.from_arrays(offsets, pa.FixedSizeListArray.from_arrays(pa.array(flat), dim))


# ----- the stage -----------------------------------------------------------------------------------------------------
class Embedder:
    """A Ray Data callable class: one engine per actor, texts of ``column`` to vectors (see the module's docstring).

    ``model``: a model name (default: ``EMBED_MODEL``); ``models_dir``: the models folder, a path every node sees or
    an object-store URI (see ``stage_models``); ``outputs``: any of ``dense``, ``sparse``, ``colbert``;
    ``settings``: other ``EMBED_*`` settings by field name (e.g. ``{"dtype": "bfloat16"}``; unset ones come from the
    node's environment); ``num_threads``: torch threads (default: the actor's CPUs); ``id_column``: names rows in
    reports; ``strict``: a row that cannot be embedded fails the batch instead of being skipped; ``prompt_name``: a
    prompt of the model's sentence-transformers config put before each text; ``tally``: an actor with an
    ``add.remote(...)`` method that counts rows (the ``embedding-server embed --ray`` command's); ``keep_text``
    False: the text column is left out of the output."""

    def __init__(self, model: str | None = None, models_dir: str | os.PathLike | None = None,
                 outputs: list[str] | tuple[str, ...] = ("dense",), column: str = "text",
                 settings: dict | None = None, num_threads: int | None = None, id_column: str | None = None,
                 strict: bool = False, prompt_name: str | None = None, keep_text: bool = True,
                 cache_dir: str | None = None, tally=None):
        from ..engine.engine import Engine
        from ..engine.types import COLBERT, DENSE, SPARSE
        from ..settings import Settings

        unknown = sorted(set(outputs) - set(OUTPUTS))
        if unknown or not outputs:
            raise ValueError(f"outputs must be some of {', '.join(OUTPUTS)} (got {', '.join(unknown) or 'none'})")
        overrides = dict(settings or {})
        bad = sorted(set(overrides) - set(Settings.model_fields))
        if bad:
            raise ValueError(f"not settings: {', '.join(bad)} (see the README's Settings table)")
        started = time.time()
        local_models, _ = stage_models(models_dir, model, cache_dir)
        if local_models is not None:
            overrides["models_dir"] = local_models
        if model is not None:
            overrides["model"] = model  # the engine's default model: loaded now, kept loaded
        threads = num_threads or overrides.get("num_threads") or assigned_cpus()
        if threads:
            overrides["num_threads"] = threads
        self.settings = Settings(**overrides)
        self.heads = frozenset({"dense": DENSE, "sparse": SPARSE, "colbert": COLBERT}[o] for o in outputs)
        self.outputs = tuple(outputs)
        self.column, self.id_column, self.strict, self.prompt_name = column, id_column, strict, prompt_name
        self.tally, self.reported, self.keep_text = tally, 0, keep_text
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedder-loop", daemon=True)
        self._thread.start()
        self.engine = Engine(self.settings)
        self._run(self.engine.load_default())
        entry = self.engine.registry.resolve(self.settings.model)
        self.model, self.dimension = entry.name, entry.encoder.details.dimension
        self.ready_at = time.time()
        log.info("model %s loaded in %.1f s (%s threads)", self.model, self.ready_at - started,
                 self.settings.num_threads or "default")
        if tally is not None:
            tally.ready.remote(self.ready_at)

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def __call__(self, batch):
        try:
            texts = _column(batch, self.column)
        except KeyError:
            raise ValueError(f"no column '{self.column}' (columns: {', '.join(_names(batch))}); "
                             "choose the text column with column=...") from None
        started = time.time()
        done = self._run(self._embed(texts))
        if done.skipped:
            self._report(batch, done.skipped)
        if self.tally is not None:
            ids = _column(batch, self.id_column) if self.id_column else None
            skipped = [(str(ids[i]) if ids else None, why) for i, why in done.skipped]
            self.tally.add.remote(int(done.keep.sum()), skipped, started, time.time())
        return _with_outputs(batch if self.keep_text else _without(batch, self.column), done)

    def _row_name(self, batch, row: int) -> str:
        if self.id_column:
            return str(_column(batch, self.id_column)[row])
        return f"{row} of its batch"

    def _report(self, batch, skipped: list[tuple[int, str]]) -> None:
        if self.strict:
            row, why = skipped[0]
            raise RowError(f"row {self._row_name(batch, row)} {why} (strict)")
        for row, why in skipped:
            self.reported += 1
            if self.reported <= REPORTED_ROWS:
                log.warning("row %s skipped: %s", self._row_name(batch, row), why)
            elif self.reported == REPORTED_ROWS + 1:
                log.warning("more rows skipped; not listed one by one")

    async def _embed(self, texts: list) -> Embedded:
        """Outputs for the rows that have text; rows the engine refuses are found by halving the request that held
        them, and left out with the engine's reason."""
        from ..engine.errors import InvalidInput
        from ..engine.types import COLBERT, DENSE, SPARSE, EmbedRequest

        keep = np.array([isinstance(t, str) and bool(t.strip()) for t in texts], dtype=bool)
        skipped = [(i, f"has no text in column '{self.column}'") for i in np.flatnonzero(~keep).tolist()]
        rows = np.flatnonzero(keep).tolist()
        results: dict[int, tuple] = {}  # row -> (dense, sparse, colbert)
        gate = asyncio.Semaphore(IN_FLIGHT)

        async def run(part: list[int]) -> None:
            request = EmbedRequest(model=self.model, inputs=[texts[i] for i in part], outputs=self.heads,
                                   prompt_name=self.prompt_name)
            try:
                async with gate:
                    result = await self.engine.embed(request)
            except InvalidInput as exc:
                if len(part) == 1:
                    skipped.append((part[0], f"cannot be embedded: {exc.message.replace('input 0 ', 'its text ')}"))
                    return
                half = len(part) // 2
                await asyncio.gather(run(part[:half]), run(part[half:]))
                return
            for k, row in enumerate(part):
                results[row] = (result.embeddings[k] if DENSE in self.heads else None,
                                result.sparse[k] if SPARSE in self.heads else None,
                                result.colbert[k] if COLBERT in self.heads else None)

        await asyncio.gather(*(run(rows[i:i + REQUEST_SIZE]) for i in range(0, len(rows), REQUEST_SIZE)))
        for row, _ in skipped:
            keep[row] = False
        skipped.sort()
        kept = [results[row] for row in np.flatnonzero(keep).tolist()]
        done = Embedded(keep, skipped=skipped)
        if DENSE in self.heads:
            done.dense = np.stack([k[0] for k in kept]) if kept else np.zeros((0, self.dimension), np.float32)
        if SPARSE in self.heads:
            done.sparse = [k[1] for k in kept]
        if COLBERT in self.heads:
            done.colbert = [k[2] for k in kept]
        return done

    def close(self) -> None:
        """Stop the engine (Ray ends an actor's process without it; for use outside Ray)."""
        async def stop():
            await self.engine.lifecycle.stop()
            await asyncio.to_thread(self.engine.stop)

        self._run(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
