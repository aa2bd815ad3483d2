"""``embedding-server embed --ray`` on a local Ray instance (``ray.init(num_cpus=2)``, started and stopped here):
Parquet in and out with vectors equal to the API's row by row, a folder of mixed formats with ids mapped exactly,
rows that cannot be embedded reported and skipped or failing with --strict, an actor killed mid-run (found through
Ray's state API) and a driver killed mid-run (SIGKILL, then the same command again): every id exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedding_server.settings import Settings
from tests.conftest import open_client
from tests.support.ray_cluster import (committed_checkpoints, cosine, free_port, need_ray,
                                       ray_test_models, read_output, session_pids, stop_session)
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # a Ray instance, its actors and subprocess runs: left out of make test-fast

WORDS = "vector search engines rank documents by cosine similarity on a cpu with the quick brown fox".split()


def text(i: int) -> str:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(4 + i % 9)) + f" number {i}"


@pytest.fixture(scope="module")
def ray_local():
    ray = need_ray()
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_port=free_port(), logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return ray_test_models(tmp_path_factory.mktemp("ray-models"))


@pytest.fixture(scope="module")
def api(models):
    client = open_client(Settings(models_dir=models, model="tiny-bert"))
    yield client
    client.__exit__(None, None, None)


@pytest.fixture
def cli(ray_local, models, monkeypatch, capsys):
    """``embedding-server embed ARGS`` in this process (joining the module's Ray instance): (exit code, stderr)."""
    from embedding_server.cli import main

    monkeypatch.setenv("EMBED_MODELS_DIR", str(models))
    monkeypatch.setenv("EMBED_MODEL", "tiny-bert")

    def run(*args: str) -> tuple[int, str]:
        capsys.readouterr()
        code = main(["embed", *args])
        return code, capsys.readouterr().err

    return run


def api_vectors(api, model: str, texts: list[str]) -> np.ndarray:
    out = []
    for i in range(0, len(texts), 512):
        r = api.post("/api/embed", json={"model": model, "input": texts[i:i + 512]})
        assert r.status_code == 200, r.text
        out.extend(r.json()["embeddings"])
    return np.array(out, np.float32)


def test_parquet_in_and_out_equal_the_api_row_by_row(cli, api, tmp_path):
    texts = [text(i) for i in range(3000)]
    ids = [f"doc-{i:05d}" for i in range(3000)]
    pq.write_table(pa.table({"doc": ids, "body": texts, "year": list(range(3000))}), tmp_path / "in.parquet")
    out = tmp_path / "vectors"
    code, err = cli(str(tmp_path / "in.parquet"), "--out", str(out), "--ray", "--model", "tiny-bge-m3",
                    "--column", "body", "--id-column", "doc", "--outputs", "dense,sparse,colbert",
                    "--batch-size", "256")
    assert code == 0, err
    assert f"3000 vectors -> {out} (0 rows skipped" in err and "rows/s per CPU on 2 CPUs" in err
    rows = read_output(out)
    assert sorted(rows) == ids  # every id once
    assert set(next(iter(rows.values()))) == {"embedding", "sparse_indices", "sparse_values", "colbert"}
    want = api_vectors(api, "tiny-bge-m3", texts)
    assert min(cosine(rows[key]["embedding"], want[i]) for i, key in enumerate(ids)) >= 0.99999
    sample = list(range(0, 3000, 97))
    encoded = api.post("/api/encode", json={"model": "tiny-bge-m3", "input": [texts[i] for i in sample],
                                            "outputs": ["sparse", "colbert"]}).json()
    for k, i in enumerate(sample):
        row = rows[ids[i]]
        assert row["sparse_indices"] == encoded["sparse"][k]["indices"]
        np.testing.assert_allclose(row["sparse_values"], encoded["sparse"][k]["values"], atol=1e-5)
        np.testing.assert_allclose(np.array(row["colbert"]), np.array(encoded["colbert"][k]), atol=1e-5)
    manifest = json.loads((out / "_embedding-server.json").read_text())
    assert manifest["state"] == "complete" and manifest["rows"] == 3000
    assert not out.with_name("vectors.checkpoint").exists()
    again = cli(str(tmp_path / "in.parquet"), "--out", str(out), "--ray", "--model", "tiny-bge-m3", "--column",
                "body", "--id-column", "doc", "--outputs", "dense,sparse,colbert", "--batch-size", "256")
    assert again[0] == 0 and "3000 vectors" in again[1] and "already complete" in again[1]


def test_a_folder_of_formats_bad_rows_strict_and_clear_errors(cli, api, tmp_path):
    folder = tmp_path / "docs"
    (folder / "part").mkdir(parents=True)
    lines = [{"text": text(0)}, {"text": ""}, {"text": "bad \ud800 text"}, {"other": 1}, {"text": text(4)}]
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "part" / "b.csv").write_text(f"text\n{text(10)}\n   \n{text(12)}\n")
    (folder / "c.txt").write_text(f"{text(20)}\n{text(21)}\n")
    (folder / "_SUCCESS").write_text("")  # not input: names starting with _ are left out
    out = tmp_path / "out"
    code, err = cli(str(folder), "--out", str(out), "--ray")
    assert code == 0, err
    rows = read_output(out)
    expected = {"a.jsonl:0": text(0), "a.jsonl:4": text(4), "part/b.csv:0": text(10), "part/b.csv:2": text(12),
                "c.txt:0": text(20), "c.txt:1": text(21)}
    assert sorted(rows) == sorted(expected)
    want = api_vectors(api, "tiny-bert", list(expected.values()))
    assert min(cosine(rows[key]["embedding"], want[i]) for i, key in enumerate(expected)) >= 0.99999
    assert "4 rows skipped" in err
    for key in ("a.jsonl:1", "a.jsonl:2", "a.jsonl:3", "part/b.csv:1"):
        assert f"skipped: row {key} has no text in column 'text'" in err

    strict = cli(str(folder), "--out", str(tmp_path / "strict"), "--ray", "--strict")
    assert strict[0] == 1 and "has no text in column 'text' (strict)" in strict[1], strict[1]
    assert len(strict[1].strip().splitlines()[-1]) < 300 and "Traceback" not in strict[1].splitlines()[-1]
    missing = cli(str(folder / "c.txt"), "--out", str(tmp_path / "m"), "--ray", "--column", "body")
    assert missing[0] == 0  # plain text has no columns: each line is a row
    missing = cli(str(folder / "part" / "b.csv"), "--out", str(tmp_path / "m2"), "--ray", "--column", "body")
    assert missing[0] == 1 and "no column 'body' (columns: text)" in missing[1]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    refused = cli(str(folder), "--out", str(foreign), "--ray")
    assert refused[0] == 1 and "is not an output of embedding-server embed --ray" in refused[1]
    assert (foreign / "keep.txt").read_text() == "mine"
    assert cli(str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--ray")[0] == 1
    assert cli(str(folder), "--out", str(tmp_path / "o"), "--ray", "--outputs", "lexical")[0] == 1
    assert cli(str(folder), "--out", str(tmp_path / "o.npy"), "--outputs", "sparse")[0] == 1  # needs --ray


def embedder_actors(ray) -> list:
    """The Embedder actors alive (Ray Data names their class after the stage: MapWorker(MapBatches(Embedder)))."""
    from ray.util.state import list_actors

    return [a for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True)
            if "(Embedder)" in (a.class_name or "")]


def test_an_actor_killed_mid_run_is_restarted_and_every_row_written_once(cli, ray_local, api, tmp_path):
    n = 4000  # all-minilm-l6-v2 (the embedded model): slow enough on two cores to be caught mid-run
    texts = [text(i) for i in range(n)]
    pq.write_table(pa.table({"id": [str(i) for i in range(n)], "text": texts}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    done: dict = {}
    runner = threading.Thread(target=lambda: done.update(result=cli(
        str(tmp_path / "in.parquet"), "--out", str(out), "--ray", "--id-column", "id", "--batch-size", "100",
        "--concurrency", "2", "--model", "all-minilm-l6-v2")))
    runner.start()
    try:
        victim = wait_until(lambda: committed_checkpoints(out) and embedder_actors(ray_local), timeout=180,
                            interval=0.1, what="an Embedder actor with rows written")[0]
        assert runner.is_alive(), "the run ended before an actor could be killed"
        os.kill(victim.pid, signal.SIGKILL)
        written_before = len(committed_checkpoints(out))
    finally:
        runner.join(600)
    code, err = done["result"]
    assert code == 0, err
    from ray.util.state import list_actors

    record = list_actors(filters=[("actor_id", "=", victim.actor_id)], detail=True)[0]
    assert (record.num_restarts or 0) >= 1 or record.pid != victim.pid, record
    rows = read_output(out)
    assert sorted(rows, key=int) == [str(i) for i in range(n)]  # every row once: none lost, none twice
    sample = list(range(0, n, 61))
    want = api_vectors(api, "all-minilm-l6-v2", [texts[i] for i in sample])
    assert min(cosine(rows[str(i)]["embedding"], want[k]) for k, i in enumerate(sample)) >= 0.99999
    print(f"\nactor kill: pid {victim.pid} killed with {written_before} blocks written; "
          f"restarts {record.num_restarts}; {err.strip().splitlines()[-1]}")


def test_a_driver_killed_mid_run_resumes_to_every_row_once(ray_local, models, api, tmp_path):
    n = 4000
    texts = [text(i) for i in range(n)]
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(n)], "text": texts}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    env = {**os.environ, "EMBED_MODELS_DIR": str(models), "EMBED_MODEL": "all-minilm-l6-v2"}
    command = [sys.executable, "-m", "embedding_server", "embed", str(tmp_path / "in.parquet"), "--out", str(out),
               "--ray", "--id-column", "id", "--batch-size", "100"]
    log = (tmp_path / "first.log").open("wb")
    first = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: len(committed_checkpoints(out)) >= 3 or first.poll() is not None, timeout=240,
                   interval=0.05, what="blocks written by the first run")
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-2000:]
        first.send_signal(signal.SIGKILL)  # the driver only; its local Ray instance goes down with it
        first.wait()
        written_before = len(committed_checkpoints(out))
    finally:
        stop_session(first)  # whatever of its Ray instance is left: our own processes, by session
    assert not (out / "_embedding-server.json").exists() or \
        json.loads((out / "_embedding-server.json").read_text())["state"] == "running"
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, start_new_session=True)
    assert second.returncode == 0, second.stderr[-3000:]
    summary = second.stderr.strip().splitlines()[-1]
    assert f"{n} vectors -> {out}" in summary and "rows from an earlier run" in summary, summary
    rows = read_output(out)
    assert sorted(rows, key=lambda k: int(k[1:])) == [f"r{i}" for i in range(n)]  # each id exactly once
    want = api_vectors(api, "all-minilm-l6-v2", texts)
    assert min(cosine(rows[f"r{i}"]["embedding"], want[i]) for i in range(n)) >= 0.99999
    assert not session_pids(first.pid)
    print(f"\ndriver kill: SIGKILL with {written_before} blocks committed; rerun: {summary}")
