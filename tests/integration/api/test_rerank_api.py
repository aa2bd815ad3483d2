"""Reranking through the app: /v1/rerank, /v2/rerank, /rerank in both bodies; scores equal CrossEncoder.predict,
results sorted, top_n, documents echoed or not, usage; model kinds refused across routes, listings, limits."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from tests.support.checkpoints import make_tiny_bert, make_tiny_cross_encoder

QUERY = "what do embedding models map"
DOCS = ["embedding models map sentences to dense vectors", "the quick brown fox", "air gapped networks " * 60,
        "vector search engines rank documents by cosine similarity", "ollama and openai clients send json"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("rerank-models")
    make_tiny_cross_encoder(root / "tiny-reranker", "bert")
    make_tiny_cross_encoder(root / "tiny-xlmr-reranker", "xlmr")
    make_tiny_bert(root / "tiny-bert")
    return root


@pytest.fixture(scope="module")
def reference(models):
    from sentence_transformers import CrossEncoder

    out = {}
    for name in ("tiny-reranker", "tiny-xlmr-reranker"):
        model = CrossEncoder(str(models / name), device="cpu")
        pairs = [(QUERY, d) for d in DOCS]
        out[name] = (model.predict(pairs), model.predict(pairs, activation_fn=torch.nn.Identity()))
    return out


@pytest.fixture(scope="module")
def client(models):
    from embedding_server.settings import Settings
    from tests.conftest import open_client

    c = open_client(Settings(models_dir=models, model="tiny-bert", max_rerank_documents=6))
    yield c
    c.close()


@pytest.mark.parametrize("name", ["tiny-reranker", "tiny-xlmr-reranker"])
def test_v1_rerank_equals_cross_encoder_predict_sorted(client, reference, name):
    r = client.post("/v1/rerank", json={"model": name, "query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"id", "model", "results", "usage", "meta"} and body["model"] == name
    expected = reference[name][0]
    got = {x["index"]: x["relevance_score"] for x in body["results"]}
    assert sorted(got) == list(range(len(DOCS)))
    assert np.abs(np.array([got[i] for i in range(len(DOCS))]) - expected).max() <= 1e-5
    assert [x["index"] for x in body["results"]] == list(np.argsort(-expected, kind="stable"))
    assert all(x["document"] == {"text": DOCS[x["index"]]} for x in body["results"])  # echoed by default on v1
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > len(DOCS) * 4


def test_top_n_document_objects_and_v2_without_documents(client, reference):
    docs = [{"text": d} for d in DOCS]
    r = client.post("/v2/rerank", json={"model": "tiny-reranker", "query": QUERY, "documents": docs, "top_n": 2})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    best = list(np.argsort(-reference["tiny-reranker"][0], kind="stable")[:2])
    assert [x["index"] for x in results] == best and all(set(x) == {"index", "relevance_score"} for x in results)
    r = client.post("/v1/rerank", json={"model": "tiny-reranker", "query": QUERY, "documents": DOCS,
                                        "return_documents": False})
    assert all("document" not in x for x in r.json()["results"])


def test_tei_rerank_needs_a_single_reranker(client):
    """TEI's body names no model: the default model if it is a reranker, else the only reranker served; with two,
    the error says which exist."""
    r = client.post("/rerank", json={"query": QUERY, "texts": DOCS})
    assert r.status_code == 422 and r.json()["error_type"] == "Validation"
    assert "tiny-reranker, tiny-xlmr-reranker" in r.json()["error"]


def test_tei_rerank_with_one_reranker(tmp_path, make_client, models, reference):
    for name in ("tiny-reranker", "tiny-bert"):  # the same folders (tokenizer training is not deterministic)
        shutil.copytree(models / name, tmp_path / name)
    expected, raw = reference["tiny-reranker"]
    c = make_client(models_dir=tmp_path, model="tiny-bert")
    r = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    ranks = r.json()
    assert [x["index"] for x in ranks] == list(np.argsort(-expected, kind="stable"))
    assert all(x["text"] == DOCS[x["index"]] for x in ranks)
    assert max(abs(x["score"] - expected[x["index"]]) for x in ranks) <= 1e-5
    ranks = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert max(abs(x["score"] - raw[x["index"]]) for x in ranks) <= 1e-5 and all("text" not in x for x in ranks)
    r = c.post("/rerank", json={"query": QUERY, "texts": DOCS, "truncate": False})
    assert r.status_code == 422 and "context length" in r.json()["error"]
    assert c.post("/rerank", json={"query": QUERY, "texts": []}).json() == {"error": "`texts` cannot be empty",
                                                                          "error_type": "Empty"}
    r = c.post("/rerank", json={"query": QUERY, "documents": DOCS[:2]})  # Cohere's body on TEI's path
    assert r.status_code == 200 and r.json()["model"] == "tiny-reranker"
    r = c.post("/rerank", json={"query": QUERY, "documents": "nope"})
    assert r.status_code == 400 and set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_model_kinds_are_refused_across_routes(client):
    r = client.post("/v1/rerank", json={"model": "tiny-bert", "query": QUERY, "documents": DOCS})
    assert r.status_code == 400 and "not a reranker" in r.json()["error"]["message"]
    for path, body in (("/api/embed", {"model": "tiny-reranker", "input": "x"}),
                       ("/v1/embeddings", {"model": "tiny-reranker", "input": "x"})):
        r = client.post(path, json=body)
        assert r.status_code == 400 and "is a reranker" in str(r.json()["error"]), (path, r.text)
    r = client.post("/v1/rerank", json={"model": "tiny-reranker", "query": QUERY, "documents": DOCS * 2})
    assert r.status_code == 400 and r.json()["error"]["code"] == "limit_exceeded"
    r = client.post("/v1/rerank", json={"model": "tiny-reranker", "query": QUERY, "documents": []})
    assert r.status_code == 400 and r.json()["error"]["param"] == "documents"
    r = client.post("/v1/rerank", json={"model": "nope", "query": QUERY, "documents": DOCS})
    assert r.status_code == 404


def test_listings_give_each_models_kind(client):
    tags = {m["name"]: m["kind"] for m in client.get("/api/tags").json()["models"]}
    assert tags["tiny-reranker:latest"] == "reranker" and tags["tiny-bert:latest"] == "embedding"
    models = {m["id"]: m["kind"] for m in client.get("/v1/models").json()["data"]}
    assert models["tiny-xlmr-reranker"] == "reranker" and models["tiny-bert"] == "embedding"
    info = {m["model_id"]: m["kind"] for m in client.get("/info").json()["models"]}
    assert info["tiny-reranker"] == "reranker" and info["tiny-bert"] == "embedding"
    assert client.post("/api/show", json={"model": "tiny-reranker"}).json()["capabilities"] == ["rerank"]
