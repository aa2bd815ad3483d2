"""TEI's own Python client (PyPI ``tei-client`` 0.2.4, its gRPC mode) against our gRPC port, and HTTP and gRPC
together under load on one engine.

tei-client ships its own ``tei_pb2`` (an older copy of the same ``tei.v1`` proto): protobuf refuses two different
files defining the same messages in one process, so the client runs in a subprocess of its own."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedding_server.api.grpc import tei_pb2 as pb
from tests.integration.api.grpc.test_grpc_embed import TEXTS, cosine

pytestmark = [pytest.mark.clients, pytest.mark.slow]

CLIENT = textwrap.dedent("""
    import json, sys
    from tei_client import GrpcClient, ModelType
    client = GrpcClient(sys.argv[1])
    texts, task = json.loads(sys.argv[2]), sys.argv[3]
    info = client.info()
    out = {"model_id": info.server_model_id, "model_type": info.server_model_type.value}
    if task == "embed":
        out["embed"] = [list(v) for v in client.embed(texts)]
        out["raw"] = [list(v) for v in client.embed(texts[:1], normalize=False, truncate=True)]
        out["tokens"] = [[t.id for t in r.tokens] for r in client.tokenize(texts)]
        out["decode"] = client.decode(out["tokens"], skip_special_tokens=True)
        out["embed_all"] = [len(v) for v in client.embed_all(texts)]
        out["prompts"] = client.prompt_names()
    else:
        ranks = client.rerank(texts[0], texts[1:], return_text=True)
        out["rerank"] = [(r.index, r.score, r.text) for r in ranks.ranks]
    print(json.dumps(out))
""")


def run_client(port: int, texts: list[str], task: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CLIENT, f"127.0.0.1:{port}", json.dumps(texts), task],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_tei_client_grpc_embed_tokenize_decode(serve, grpc_models):
    served = serve(models_dir=grpc_models, model="tiny-bert")
    out = run_client(served.port, TEXTS, "embed")
    assert out["model_id"] == "tiny-bert" and out["model_type"] == "embedding"
    want = served.http.post("/embed", json={"inputs": TEXTS}).json()
    assert len(out["embed"]) == len(TEXTS) and min(map(cosine, out["embed"], want)) >= 0.99999
    # tei-client's proto predates `optional bool normalize`: its normalize=False is proto3's default, not sent, and
    # so read as unset, i.e. true (TEI answers it the same way).
    assert np.allclose(out["raw"], want[:1], atol=1e-5)
    tokens = served.http.post("/tokenize", json={"inputs": TEXTS}).json()
    assert out["tokens"] == [[t["id"] for t in text] for text in tokens]
    assert out["decode"] == served.http.post("/decode", json={"ids": out["tokens"]}).json()
    assert out["embed_all"] == [len(t) for t in tokens]
    assert sorted(out["prompts"]) == ["passage", "query"]  # read from our message, as from TEI's


def test_tei_client_grpc_rerank(serve, grpc_models):
    served = serve(models_dir=grpc_models, model="tiny-reranker")
    query, docs = "what do embedding models map", ["dense vectors for sentences", "the quick brown fox", "cosine"]
    out = run_client(served.port, [query, *docs], "rerank")
    assert out["model_type"] == "reranker"
    want = served.http.post("/rerank", json={"query": query, "texts": docs, "return_text": True}).json()
    assert [(i, t) for i, _, t in out["rerank"]] == [(w["index"], w["text"]) for w in want]
    assert np.allclose([s for _, s, _ in out["rerank"]], [w["score"] for w in want], atol=1e-6)


def test_http_and_grpc_together_under_load(minilm):
    texts = [f"load text {i}: {TEXTS[i % 3]}" for i in range(64)]
    want = np.array(minilm.http.post("/embed", json={"inputs": texts}).json())
    embed = minilm.stub("Embed")

    def grpc_stream(_):
        return [list(a.embeddings) for a in embed.EmbedStream(iter(pb.EmbedRequest(inputs=t) for t in texts))]

    def grpc_unary(i):
        return [list(embed.Embed(pb.EmbedRequest(inputs=texts[i])).embeddings)]

    def http_bulk(_):
        r = minilm.http.post("/embed", json={"inputs": texts})
        assert r.status_code == 200, r.text
        return r.json()

    def http_one(i):
        r = minilm.http.post("/embed", json={"inputs": texts[i]})
        assert r.status_code == 200, r.text
        return r.json()

    jobs = [(f, i) for i in range(16) for f in (grpc_stream, grpc_unary, http_bulk, http_one)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda job: (job, job[0](job[1])), jobs))
    for (kind, i), vectors in results:
        expected = want if kind in (grpc_stream, http_bulk) else want[i:i + 1]
        assert len(vectors) == len(expected)
        assert min(map(cosine, vectors, expected)) >= 0.99999, kind.__name__
    metrics = minilm.http.get("/metrics").text
    assert 'route="/tei.v1.Embed/EmbedStream",status="200"' in metrics and 'route="/embed",status="200"' in metrics
