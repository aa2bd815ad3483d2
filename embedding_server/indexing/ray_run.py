"""``embedding-server embed INPUT --out OUT --ray``: the Ray Data pipeline of a whole dataset, resumable, exactly once.

    read (ray_source.TextRows: id, text)  ->  [checkpoint filter]  ->  map_batches(Embedder, actors)  ->  write_parquet

OUT is a Parquet dataset (a folder; one file per written block; columns ``id``, ``embedding`` and the other outputs
asked for). Exactly once, by id, through Ray Data's checkpointing: each write task first records its rows' ids as a
*pending* checkpoint in ``<OUT>.checkpoint/``, writes its data file, then commits the checkpoint (a rename). A rerun
after a killed driver or a lost node deletes the data files of pending checkpoints, skips the rows whose ids are
committed and embeds the rest. ``OUT/_embedding-server.json`` says what the run is (so that a rerun with another input
or options starts afresh instead of mixing results) and whether it is complete; the checkpoint is removed on success.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass

from .sources import SourceError

MANIFEST = "_embedding-server.json"  # names starting with "_" are not data files to Ray Data or pyarrow datasets


def _resolve(uri: str):
    """(pyarrow filesystem, path on it) of a local path or a URI pyarrow reads."""
    import pyarrow.fs as pafs

    if "://" in uri:
        return pafs.FileSystem.from_uri(uri)
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def input_files(filesystem, path: str) -> list:
    """The input's files (FileInfo, sorted by path): the file itself, or a folder's files of known formats (names
    starting with ``_`` or ``.`` left out, as Ray Data and pyarrow do)."""
    import pyarrow.fs as pafs

    from .ray_source import EXTENSIONS

    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"{path}: no such file or folder")
    if info.type == pafs.FileType.File:
        return [info]
    found = filesystem.get_file_info(pafs.FileSelector(path, recursive=True))
    files = sorted((f for f in found if f.type == pafs.FileType.File and f.extension.lower() in EXTENSIONS
                    and not any(part.startswith(("_", ".")) for part in f.path[len(path):].split("/") if part)),
                   key=lambda f: f.path)
    if not files:
        raise SourceError(f"{path}: no input files in it ({', '.join('.' + e for e in EXTENSIONS)})")
    return files


@dataclass
class Plan:
    """What the run is, from the command's arguments."""

    source: str  # as given
    out: str
    column: str
    id_column: str | None
    model: str | None
    models_dir: str | None
    outputs: list[str]
    strict: bool
    settings: dict  # EMBED_* settings for the actors (from this environment)


def signature(plan: Plan, files) -> dict:
    listing = hashlib.sha256("\n".join(f"{f.path}\t{f.size}\t{f.mtime_ns}" for f in files).encode()).hexdigest()
    return {"input": plan.source, "files": len(files), "listing": listing, "column": plan.column,
            "id_column": plan.id_column, "model": plan.model, "models_dir": plan.models_dir,
            "outputs": plan.outputs, "strict": plan.strict}


class Output:
    """OUT, its manifest and its checkpoint folder (``<OUT>.checkpoint``, beside it: Ray Data deletes the data files
    of pending checkpoints by name prefix under OUT, so the checkpoint cannot live inside it)."""

    def __init__(self, uri: str):
        import pyarrow.fs as pafs

        self.uri = uri.rstrip("/")
        self.fs, self.path = _resolve(self.uri)
        self.path = self.path.rstrip("/")
        self.checkpoint_uri = self.uri + ".checkpoint" if "://" in self.uri else self.path + ".checkpoint"
        self.checkpoint_path = self.path + ".checkpoint"
        self._pafs = pafs

    def manifest(self) -> dict | None:
        try:
            with self.fs.open_input_stream(f"{self.path}/{MANIFEST}") as f:
                return json.loads(f.read())
        except (FileNotFoundError, OSError, ValueError):
            return None

    def write_manifest(self, record: dict) -> None:
        tmp = f"{self.path}/{MANIFEST}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps(record, indent=1).encode())
        self.fs.move(tmp, f"{self.path}/{MANIFEST}")

    def entries(self) -> list:
        info = self.fs.get_file_info(self.path)
        if info.type == self._pafs.FileType.NotFound:
            return []
        if info.type == self._pafs.FileType.File:
            raise SourceError(f"{self.uri} is a file; --out with --ray names a folder (a Parquet dataset)")
        return self.fs.get_file_info(self._pafs.FileSelector(self.path))

    def clear(self) -> None:
        """Remove an earlier run's dataset (OUT holds our manifest) and checkpoint."""
        self.fs.delete_dir_contents(self.path, missing_dir_ok=True)
        self.clear_checkpoint()

    def clear_checkpoint(self) -> None:
        if self.fs.get_file_info(self.checkpoint_path).type != self._pafs.FileType.NotFound:
            self.fs.delete_dir(self.checkpoint_path)

    def rows(self) -> int:
        """Rows in the dataset's Parquet files (from their footers)."""
        import pyarrow.dataset as pads

        dataset = pads.dataset(self.path, filesystem=self.fs, format="parquet")
        return sum(fragment.metadata.num_rows for fragment in dataset.get_fragments())


def prepare(plan: Plan, out: Output, files) -> tuple[dict, str]:
    """Decide between a fresh run, a resumed one and nothing to do ("complete"); returns (manifest, state)."""
    record = {"signature": signature(plan, files), "state": "running"}
    manifest = out.manifest()
    if manifest is None:
        if any(e for e in out.entries()):
            raise SourceError(f"{out.uri} exists and is not an output of embedding-server embed --ray; "
                              "choose another --out or remove it")
        out.clear_checkpoint()  # a checkpoint without its manifest is nobody's
    elif manifest.get("signature") != record["signature"]:
        out.clear()  # another input or other options: start afresh
    elif manifest.get("state") == "complete":
        return manifest, "complete"
    else:
        out.fs.create_dir(out.path)
        return manifest, "resume"
    out.fs.create_dir(out.path)
    out.write_manifest(record)
    return record, "fresh"


def environment_settings(environ: dict[str, str]) -> dict:
    """The ``EMBED_*`` settings of this environment by field name (the actors' nodes may not have them)."""
    from ..settings import Settings

    # models_dir and model are the stage's own arguments; an actor's threads are its CPUs (--cpus-per-actor)
    fields = set(Settings.model_fields) - {"models_dir", "model", "num_threads"}
    return {k[6:].lower(): v for k, v in environ.items() if k.upper().startswith("EMBED_") and k[6:].lower() in fields}


def _tally_class():
    import ray

    @ray.remote(num_cpus=0)
    class Tally:
        """Counts from the actors: rows embedded, rows skipped (by id, so that a retried batch counts once), when
        the first model was ready and the last batch ended."""

        def __init__(self):
            self.embedded, self.skipped, self.first_ready, self.last_end = 0, {}, None, None

        def ready(self, at: float) -> None:
            self.first_ready = at if self.first_ready is None else min(self.first_ready, at)

        def add(self, embedded: int, skipped: list, started: float, ended: float) -> None:
            self.embedded += embedded
            for key, why in skipped:
                self.skipped[key if key is not None else f"#{len(self.skipped)}"] = why
            self.last_end = ended if self.last_end is None else max(self.last_end, ended)

        def totals(self) -> dict:
            return {"embedded": self.embedded, "skipped": len(self.skipped),
                    "examples": list(self.skipped.items())[:5], "first_ready": self.first_ready}

    return Tally


def _message(exc: BaseException) -> str:
    """One line for an error: a row or source error raised in an actor or a read task (Ray hands the driver its
    traceback as text, inside RayTaskError and UserCodeException), else the error's own last line."""
    import re

    from .ray_stage import RowError

    seen: BaseException | None = exc
    for _ in range(20):
        if seen is None:
            break
        if isinstance(seen, (RowError, SourceError)):
            return str(seen).splitlines()[0]
        found = re.findall(r"(?:RowError|SourceError): (.+)", str(seen))
        if found:
            return found[-1].strip()
        seen = seen.__cause__ or seen.__context__
    text = str(exc).strip().splitlines()
    return (text[-1] if text else type(exc).__name__)[:500]


def _first_rows(filesystem, path: str, plan: Plan, n: int = 1000) -> float:
    """Bytes per row (id and text) in Arrow over the first ``n`` rows of ``path``; reading them checks the columns."""
    from itertools import islice

    from .ray_source import _table, kind_of, rows

    opened = filesystem.open_input_file(path) if kind_of(path) == "parquet" else filesystem.open_input_stream(path)
    with opened as f:
        first = list(islice(rows(f, path, plan.column, plan.id_column), n))
    if not first:
        return 256.0
    return _table([key for key, _ in first], [t for _, t in first], plan.column, path, report=False).nbytes / len(first)


def run(plan: Plan, address: str | None, concurrency: int | None, cpus_per_actor: float, batch_size: int,
        stream=None) -> int:
    import ray
    from ray.data.checkpoint import CheckpointConfig

    from .ray_source import TextRows
    from .ray_stage import Embedder

    stream = stream or sys.stderr  # at call time (a test's captured stderr, a redirected one)
    if address and address.startswith("ray://") and not ray.is_initialized():
        # Ray Client: Ray Data's executor cannot run in a client process, so the whole run is one task on the
        # cluster (INPUT, OUT and the models must be paths or URIs its nodes see) and its summary comes back here.
        ray.init(address=address, logging_level="WARNING")
        task = ray.remote(num_cpus=0, max_retries=0)(_run_on_cluster)
        print(ray.get(task.remote(plan, concurrency, cpus_per_actor, batch_size)), end="", file=stream)
        return 0
    in_fs, in_path = _resolve(plan.source)
    files = input_files(in_fs, in_path)
    out = Output(plan.out)
    row_bytes = _first_rows(in_fs, files[0].path, plan)  # and a missing column: one line before any Ray work
    manifest, state = prepare(plan, out, files)
    if state == "complete":
        print(f"{manifest.get('rows', 0)} vectors -> {out.uri} (already complete; remove it to embed again)",
              file=stream)
        return 0

    started = time.time()
    if not ray.is_initialized():
        # "local": a new local instance, never a cluster another `ray start` left in /tmp/ray/ray_current_cluster
        if not address:  # this machine's own job: its actors at normal priority, as the command without --ray
            os.environ.setdefault("RAY_worker_niceness", "0")  # (Ray's default for workers is 15)
        ray.init(address=address or "local", logging_level="WARNING", log_to_driver=True)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    actors = concurrency or max(1, int(cpus // cpus_per_actor))
    ctx = ray.data.DataContext.get_current()
    block_size = ctx.target_max_block_size
    ctx.checkpoint_config = CheckpointConfig(id_column="id", checkpoint_path=out.checkpoint_uri,
                                             delete_checkpoint_on_success=True)
    tally = _tally_class().remote()
    source = TextRows([f.path for f in files], in_path, plan.column, plan.id_column, in_fs, block_rows=batch_size,
                      prefix_ids=len(files) > 1 and not plan.id_column)
    # Blocks of about batch_size input rows (a read task's blocks are otherwise coalesced up to 128 MiB): about one
    # batch per actor task, and files of batch_size rows, so that a lost actor, node or driver loses about one batch
    # per actor. (Ray Data's row-count repartition is a task that needs a CPU, which the actors hold.)
    ctx.target_max_block_size = max(1024, int(row_bytes * batch_size))
    ds = ray.data.read_datasource(source, num_cpus=0)
    ds = ds.map_batches(Embedder, fn_constructor_kwargs={
        "model": plan.model, "models_dir": plan.models_dir, "outputs": plan.outputs, "column": plan.column,
        "settings": plan.settings, "id_column": "id", "strict": plan.strict, "keep_text": False,
        "tally": tally},
        batch_size=batch_size, batch_format="pyarrow",
        # one batch per actor at a time, none queued on it: a free actor takes the next batch (batches queued ahead on
        # an actor left the other idle at the end: 8,000 rows on 2 actors ran 5 batches against 3)
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
        num_cpus=cpus_per_actor)
    try:
        ds.write_parquet(out.uri if "://" in out.uri else out.path, filesystem=out.fs, min_rows_per_file=batch_size,
                         ray_remote_args={"num_cpus": 0})
    finally:  # this run's; not for the process' later datasets
        ctx.checkpoint_config, ctx.target_max_block_size = None, block_size
    ended = time.time()
    totals = ray.get(tally.totals.remote())
    rows = out.rows()
    out.write_manifest({**manifest, "state": "complete", "rows": rows})
    out.clear_checkpoint()  # Ray Data removes it on success; a run with nothing left to embed never created one
    embedding = ended - (totals["first_ready"] or started)
    rate = totals["embedded"] / embedding if embedding > 0 else 0.0
    resumed = rows - totals["embedded"]
    print(f"{rows} vectors -> {out.uri} ({totals['skipped']} rows skipped, {ended - started:.1f} s, "
          f"{rate:.0f} rows/s from the first model ready, {rate / cpus:.1f} rows/s per CPU on {cpus:g} CPUs, "
          f"{actors} actors{f', {resumed} rows from an earlier run' if resumed > 0 else ''})", file=stream)
    for key, why in totals["examples"]:
        print(f"  skipped: row {key} {why}", file=stream)
    return 0


def _run_on_cluster(plan: Plan, concurrency: int | None, cpus_per_actor: float, batch_size: int) -> str:
    """``run`` inside a task on the cluster (for a Ray Client driver): its summary as text."""
    import io

    summary = io.StringIO()
    run(plan, None, concurrency, cpus_per_actor, batch_size, stream=summary)
    return summary.getvalue()


def ray_command(args: argparse.Namespace) -> int:
    """``embedding-server embed --ray``: exit 0 when done, 1 with one line on a usage or data problem, 130 on
    Ctrl-C (run the same command again to continue)."""
    try:
        import ray  # noqa: F401
    except ImportError:
        print("embedding-server embed --ray needs Ray: pip install 'embedding-server[ray]'", file=sys.stderr)
        return 1
    if not args.out:
        print("embedding-server embed --ray: --out names the output folder (a Parquet dataset)", file=sys.stderr)
        return 1
    from .ray_stage import OUTPUTS

    outputs = [o.strip() for o in (args.outputs or "dense").split(",") if o.strip()]
    if not outputs or set(outputs) - set(OUTPUTS):
        print(f"embedding-server embed: --outputs takes some of {', '.join(OUTPUTS)}", file=sys.stderr)
        return 1
    environ = dict(os.environ)
    plan = Plan(args.input, args.out, args.column, args.id_column, args.model or environ.get("EMBED_MODEL"),
                args.models_dir or environ.get("EMBED_MODELS_DIR"), outputs, args.strict,
                environment_settings(environ))
    try:
        return run(plan, args.ray_address, args.concurrency, args.cpus_per_actor, args.batch_size)
    except KeyboardInterrupt:
        print("embedding-server embed: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - Ray's wrapped errors, sources, settings: one line
        print(f"embedding-server embed: {_message(exc)}", file=sys.stderr)
        return 1
