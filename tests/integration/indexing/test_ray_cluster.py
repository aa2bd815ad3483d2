"""``embedding-server embed --ray --ray-address`` on a two-node Ray cluster on loopback: a head node (``ray start
--head``) and a second node joining it (``ray start --address``) with its own CPU, custom resource and model cache,
both started and stopped here. The models folder is given as an object-store URI (``file://``), copied once per
node; the actors run on both nodes; the vectors equal the API's row by row, each id once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from embedding_server.settings import Settings
from tests.conftest import open_client
from tests.support.ray_cluster import cosine, free_port, need_ray, read_output, start_node, stop_session
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # two Ray nodes and their actors: left out of make test-fast

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(head address, {node name: its model cache}) of a running two-node cluster; this process is its driver."""
    ray = need_ray()
    if ray.is_initialized():
        ray.shutdown()
    root = tmp_path_factory.mktemp("ray-cluster")
    caches = {"head": root / "cache-head", "second": root / "cache-second"}
    port, client_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"

    def common() -> list[str]:  # each node its own agents' ports
        return ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=300000000",
                f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}"]

    # Without Ray's token authentication: this driver process read its auth mode when it imported ray (an earlier
    # test may have), so it cannot take a token now; the cluster lives for this module on this machine only.
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}, "RAY_AUTH_MODE": "disabled"}
    head = start_node(["--head", f"--port={port}", f"--dashboard-port={free_port()}", "--include-dashboard=true",
                       f"--ray-client-server-port={client_port}", "--resources={\"head\": 1}", *common()],
                      {**env, "EMBEDDING_SERVER_CACHE": str(caches["head"])}, root / "head.log")
    nodes = [head]
    try:
        wait_until(lambda: "Ray runtime started" in (root / "head.log").read_text(errors="replace")
                   or head.poll() is not None, timeout=120, interval=0.2, what="the head node to start")
        assert head.poll() is None, (root / "head.log").read_text()[-3000:]
        second = start_node([f"--address={address}", "--resources={\"second\": 1}", *common()],
                            {**env, "EMBEDDING_SERVER_CACHE": str(caches["second"])}, root / "second.log")
        nodes.append(second)
        ray.init(address=address, logging_level="WARNING")
        wait_until(lambda: sum(n["Alive"] for n in ray.nodes()) == 2 or second.poll() is not None, timeout=120,
                   interval=0.2, what="the second node to join")
        assert second.poll() is None, (root / "second.log").read_text()[-3000:]
        yield address, caches, f"ray://127.0.0.1:{client_port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for node in reversed(nodes):
            stop_session(node)
        current = Path("/tmp/ray/ray_current_cluster")  # what `ray stop` would remove: our head's address
        if current.is_file() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cluster-models")
    shutil.copytree(FIXTURES / "tiny-bge-m3", root / "tiny-bge-m3")
    return root


def test_two_nodes_embed_once_per_id_with_the_model_copied_once_per_node(cluster, models, tmp_path, capsys):
    import ray
    from ray.util.state import list_actors

    from embedding_server.cli import main

    address, caches, _ = cluster
    assert {r for n in ray.nodes() for r in n["Resources"]} >= {"head", "second", "CPU"}
    n = 4000
    texts = [f"passage {i}: {'vector search on a cpu' if i % 2 else 'air gapped networks'} and the lazy dog {i % 13}"
             for i in range(n)]
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(n)], "text": texts}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    capsys.readouterr()
    started = time.monotonic()
    code = main(["embed", str(tmp_path / "in.parquet"), "--out", str(out), "--ray", "--ray-address", address,
                 "--id-column", "id", "--model", "tiny-bge-m3", "--models-dir", f"file://{models}",
                 "--outputs", "dense,sparse", "--batch-size", "250"])
    seconds = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 0, err
    summary = err.strip().splitlines()[-1]
    assert f"{n} vectors -> {out}" in summary and "on 2 CPUs, 2 actors" in summary, summary

    actors = [a for a in list_actors(detail=True) if "(Embedder)" in (a.class_name or "")]
    assert len({a.node_id for a in actors}) == 2, [(a.node_id, a.state) for a in actors]  # one per node
    for cache in caches.values():  # copied once per node, from the URI, into that node's cache
        folders = [p for p in (cache / "models").glob("*/*") if not p.name.startswith(".")]
        assert [p.name for p in folders] == ["tiny-bge-m3"], folders
        assert sorted(p.name for p in folders[0].iterdir()) == \
            sorted(p.name for p in (models / "tiny-bge-m3").iterdir())

    rows = read_output(out)
    assert sorted(rows, key=lambda k: int(k[1:])) == [f"p{i}" for i in range(n)]
    client = open_client(Settings(models_dir=models, model="tiny-bge-m3"))
    try:
        want, sparse = [], []
        for i in range(0, n, 500):
            r = client.post("/api/encode", json={"input": texts[i:i + 500], "outputs": ["dense", "sparse"]}).json()
            want.extend(r["dense"])
            sparse.extend(r["sparse"])
    finally:
        client.__exit__(None, None, None)
    assert min(cosine(rows[f"p{i}"]["embedding"], want[i]) for i in range(n)) >= 0.99999
    for i in range(0, n, 37):
        assert rows[f"p{i}"]["sparse_indices"] == sparse[i]["indices"]
        np.testing.assert_allclose(rows[f"p{i}"]["sparse_values"], sparse[i]["values"], atol=1e-5)
    print(f"\ntwo-node cluster: {n} rows in {seconds:.1f} s (driver wall clock); {summary}")


def test_a_ray_client_address_runs_the_same_job(cluster, models, tmp_path):
    """``--ray-address ray://HOST:PORT`` (Ray Client, a driver off the cluster): the same rows, each id once."""
    _, _, client_address = cluster
    n = 600
    texts = [f"client row {i} about {'search' if i % 3 else 'networks'}" for i in range(n)]
    pq.write_table(pa.table({"id": [f"c{i}" for i in range(n)], "text": texts}), tmp_path / "in.parquet")
    out = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run([sys.executable, "-m", "embedding_server", "embed", str(tmp_path / "in.parquet"),
                           "--out", str(out), "--ray", "--ray-address", client_address, "--id-column", "id",
                           "--model", "tiny-bge-m3", "--models-dir", f"file://{models}", "--batch-size", "200"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # the summary line (the cluster's log lines, forwarded asynchronously, may come after it)
    assert any(line.startswith(f"{n} vectors -> {out} (0 rows skipped") for line in done.stderr.splitlines()), \
        done.stderr[-2000:]
    rows = read_output(out)
    assert sorted(rows, key=lambda k: int(k[1:])) == [f"c{i}" for i in range(n)]
    client = open_client(Settings(models_dir=models, model="tiny-bge-m3"))
    try:
        want = client.post("/api/embed", json={"input": texts}).json()["embeddings"]
    finally:
        client.__exit__(None, None, None)
    assert min(cosine(rows[f"c{i}"]["embedding"], want[i]) for i in range(n)) >= 0.99999
