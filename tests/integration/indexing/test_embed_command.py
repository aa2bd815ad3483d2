"""``embedding-server embed``: every input and output format, empty rows, clear errors, the vectors the engine
gives, resume after an interruption (a killed process and a failing backend) with atomic outputs, and --url."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedding_server.indexing import run as run_module
from embedding_server.indexing.backends import InProcess
from embedding_server.indexing.run import index
from embedding_server.indexing.store import ids_path
from embedding_server.model.encoder import SentenceEncoder
from embedding_server.settings import Settings
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # embed runs in subprocesses and a live server: left out of make test-fast

TEXTS = [f"document number {i} about {'vector search' if i % 3 else 'air gapped networks'}" for i in range(40)]


class Done:
    def __init__(self, returncode: int, stderr: str):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def cli(monkeypatch, capsys):
    """``embedding-server embed ARGS`` in this process (the CLI's own entry point), with ``env`` set."""
    from embedding_server.cli import main

    def run(*args: str, env: dict | None = None) -> Done:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main(["embed", *args])
        return Done(code, capsys.readouterr().err)

    return run


@pytest.fixture(scope="module")
def env(tiny_models_dir) -> dict:
    return {"EMBED_MODELS_DIR": str(tiny_models_dir), "EMBED_MODEL": "tiny-bert"}


def cli_process(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "embedding_server", "embed", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


@pytest.fixture(scope="module")
def expected(tiny_models_dir) -> np.ndarray:
    encoder = SentenceEncoder(tiny_models_dir / "tiny-bert")
    return encoder.embed(encoder.tokenize(TEXTS))


def write_inputs(folder: Path) -> dict[str, Path]:
    rows = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(TEXTS)]
    paths = {kind: folder / f"in.{kind}" for kind in ("csv", "jsonl", "parquet", "txt")}
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "text"])
        writer.writeheader()
        writer.writerows(rows)
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "text": TEXTS}), paths["parquet"])
    paths["txt"].write_text("".join(t + "\n" for t in TEXTS))
    return paths


def read_output(out: Path) -> tuple[list[str], np.ndarray]:
    if out.suffix == ".npy":
        return json.loads(ids_path(out).read_text()), np.load(out)
    if out.suffix == ".jsonl":
        records = [json.loads(line) for line in out.read_text().splitlines()]
        return [r["id"] for r in records], np.array([r["embedding"] for r in records], np.float32)
    table = pq.read_table(out)
    return table.column("id").to_pylist(), np.array(table.column("embedding").to_pylist(), np.float32)


@pytest.mark.parametrize("source", ["csv", "jsonl", "parquet", "txt"])
@pytest.mark.parametrize("suffix", [".npy", ".parquet", ".jsonl"])
def test_every_input_and_output_format(tmp_path, cli, env, expected, source, suffix):
    path = write_inputs(tmp_path)[source]
    out = tmp_path / f"out{suffix}"
    args = [str(path), "--out", str(out)] + ([] if source == "txt" else ["--id-column", "id"])
    done = cli(*args, env=env)
    assert done.returncode == 0, done.stderr
    ids, vectors = read_output(out)
    assert ids == ([f"doc-{i}" for i in range(40)] if source != "txt" else [str(i) for i in range(40)])
    assert vectors.shape == expected.shape and np.abs(vectors - expected).max() < 1e-5
    assert not out.with_name(out.name + ".partial").exists()
    assert "40 vectors" in done.stderr and "rows/s" in done.stderr


def test_empty_rows_are_skipped_or_refused_and_errors_are_one_line(tmp_path, cli, env):
    path = tmp_path / "gaps.csv"
    path.write_text("id,text,other\n1,first,x\n2,,y\n3,   ,z\n4,last,w\n")
    done = cli(str(path), "--id-column", "id", env=env)
    assert done.returncode == 0 and "2 empty rows skipped" in done.stderr
    assert json.loads(ids_path(tmp_path / "gaps.npy").read_text()) == ["1", "4"]
    strict = cli(str(path), "--id-column", "id", "--strict", "--out", str(tmp_path / "s.npy"), env=env)
    assert strict.returncode == 1 and "row 2 has no text" in strict.stderr and not (tmp_path / "s.npy").exists()
    missing = cli(str(path), "--column", "body", env=env)
    assert missing.returncode == 1 and "no column 'body' (columns: id, text, other)" in missing.stderr
    assert "Traceback" not in missing.stderr + strict.stderr
    assert cli(str(tmp_path / "nope.csv"), env=env).returncode == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\nnot json\n')
    broken = cli(str(bad), env=env)
    assert broken.returncode == 1 and "line 2 is not JSON" in broken.stderr
    assert cli(str(path), "--out", str(tmp_path / "x.csv"), env=env).returncode == 1


def test_killed_run_resumes_to_the_same_result(tmp_path, env):
    path = tmp_path / "big.txt"
    path.write_text("".join(f"line {i} of a generated input about {i % 97} things\n" for i in range(9000)))
    whole = cli_process(str(path), "--out", str(tmp_path / "whole.npy"), env=env)
    assert whole.returncode == 0, whole.stderr
    out, partial = tmp_path / "resumed.npy", tmp_path / "resumed.npy.partial"
    proc = subprocess.Popen([sys.executable, "-m", "embedding_server", "embed", str(path), "--out", str(out)],
                            env={**os.environ, **env}, stderr=subprocess.PIPE)

    def first_chunk_stored() -> bool:  # renamed into place: not chunk-<k>.tmp.npz, which a kill can leave half-written
        assert proc.poll() is None, "the run ended before it was killed"
        return any(not p.name.endswith(".tmp.npz") for p in partial.glob("chunk-*.npz"))

    wait_until(first_chunk_stored, timeout=120, interval=0.01, what="the first chunk to be stored")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and not ids_path(out).exists()  # nothing half-written in place
    done = cli_process(str(path), "--out", str(out), env=env)
    assert done.returncode == 0 and "chunks resumed" in done.stderr, done.stderr
    assert json.loads(ids_path(out).read_text()) == json.loads(ids_path(tmp_path / "whole.npy").read_text())
    assert np.abs(np.load(out) - np.load(tmp_path / "whole.npy")).max() < 1e-5


class FailsAfter:
    """A backend that raises after ``n`` requests (an interrupted run), else the real in-process one."""

    def __init__(self, inner, n: int):
        self.inner, self.n = inner, n
        self.request_size, self.concurrency = 4, 1

    async def start(self):
        return await self.inner.start()

    async def embed(self, texts):
        self.n -= 1
        if self.n < 0:
            raise KeyboardInterrupt
        return await self.inner.embed(texts)


def test_interrupted_run_continues_where_it_stopped(tmp_path, tiny_models_dir, expected, monkeypatch):
    monkeypatch.setattr(run_module, "CHUNK_ROWS", 8)
    path = write_inputs(tmp_path)["jsonl"]
    out = tmp_path / "out.jsonl"

    async def go(backend):
        try:
            return await index(path, out, backend, "text", "id")
        finally:
            await backend.inner.close() if hasattr(backend, "inner") else await backend.close()

    settings = Settings(models_dir=tiny_models_dir, model="tiny-bert")
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(go(FailsAfter(InProcess(settings, None), 5)))  # 2 chunks of 8 rows done, then Ctrl-C
    assert len(list(out.with_name("out.jsonl.partial").glob("chunk-*.npz"))) == 2 and not out.exists()
    summary = asyncio.run(go(InProcess(settings, None)))
    assert summary.resumed_chunks == 2 and summary.rows == 40
    ids, vectors = read_output(out)
    assert ids == [f"doc-{i}" for i in range(40)] and np.abs(vectors - expected).max() < 1e-5
    path.write_text(path.read_text().replace("doc-0", "doc-zero"))  # another input: starts afresh
    assert asyncio.run(go(InProcess(settings, None))).resumed_chunks == 0


def test_through_a_running_server_in_both_dialects(tmp_path, cli, live_server, minilm_dir):
    path = write_inputs(tmp_path)["csv"]
    encoder = SentenceEncoder(minilm_dir)
    want = encoder.embed(encoder.tokenize(TEXTS))
    for api in ("ollama", "openai"):
        out = tmp_path / f"{api}.npy"
        done = cli(str(path), "--id-column", "id", "--out", str(out), "--url", live_server, "--api", api,
                   "--model", "all-minilm-l6-v2")
        assert done.returncode == 0, done.stderr
        assert np.abs(np.load(out) - want).max() < 1e-5
