"""POST /api/encode: BGE-M3's dense, sparse and ColBERT outputs from one pass, equal to FlagEmbedding's."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.unit.model.test_m3_heads import FOLDER, REFERENCE

TEXTS = REFERENCE["texts"]


@pytest.fixture(scope="module")
def m3_client(tmp_path_factory, tiny_models_dir):
    from tests.conftest import open_client
    from embedding_server.settings import Settings

    root = tmp_path_factory.mktemp("m3-models")
    shutil.copytree(FOLDER, root / "bge-m3")
    shutil.copytree(tiny_models_dir / "tiny-bert", root / "tiny-bert")
    client = open_client(Settings(models_dir=root, model="bge-m3"))
    yield client
    client.__exit__(None, None, None)


def encode(client, **body):
    return client.post("/api/encode", json={"model": "bge-m3", "input": TEXTS, **body})


def test_all_three_outputs_equal_flagembedding(m3_client):
    r = encode(m3_client, outputs=["dense", "sparse", "colbert"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["model", "dense", "sparse", "colbert", "total_duration", "load_duration",
                          "prompt_eval_count"]
    dense = np.asarray(body["dense"])
    assert (dense * np.asarray(REFERENCE["dense"])).sum(1).min() >= 0.99999
    for got, want in zip(body["sparse"], REFERENCE["sparse"]):
        assert sorted(got["indices"]) == got["indices"] and {str(i) for i in got["indices"]} == set(want)
        assert all(abs(v - want[str(i)]) <= 1e-5 for i, v in zip(got["indices"], got["values"]))
    for got, want in zip(body["colbert"], REFERENCE["colbert"]):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape and (got * want).sum(1).min() >= 0.99999
    embed = m3_client.post("/api/embed", json={"model": "bge-m3", "input": TEXTS}).json()
    assert body["prompt_eval_count"] == embed["prompt_eval_count"]
    np.testing.assert_allclose(dense, embed["embeddings"], atol=1e-6)


def test_only_the_outputs_asked_for_and_dimensions_apply_to_dense_only(m3_client):
    sparse_only = encode(m3_client, outputs=["sparse"]).json()
    assert "dense" not in sparse_only and "colbert" not in sparse_only and len(sparse_only["sparse"]) == len(TEXTS)
    body = encode(m3_client, outputs=["dense", "colbert"], dimensions=8).json()
    assert np.asarray(body["dense"]).shape == (len(TEXTS), 8)
    assert np.asarray(body["colbert"][0]).shape[1] == 32
    assert encode(m3_client).json().keys() >= {"dense"} and "sparse" not in encode(m3_client).json()


def test_sparse_as_a_map_with_token_strings(m3_client):
    body = encode(m3_client, outputs=["sparse"], sparse_format="map", sparse_tokens=True).json()
    for got, want in zip(body["sparse"], REFERENCE["sparse"]):
        assert set(got) == set(want) and all(abs(got[k] - want[k]) <= 1e-5 for k in want)
    for got, want in zip(body["sparse_tokens"], REFERENCE["sparse_tokens"]):  # FlagEmbedding's convert_id_to_token
        assert set(got) == set(want) and all(abs(got[k] - want[k]) <= 1e-5 for k in want)


def test_errors_in_ollamas_shape(m3_client):
    r = m3_client.post("/api/encode", json={"model": "tiny-bert", "input": "x", "outputs": ["dense", "sparse"]})
    assert r.status_code == 400 and "sparse_linear.pt" in r.json()["error"]
    for bad in ({"outputs": ["bm25"]}, {"outputs": []}, {"input": ""}, {"input": 5}, {"truncate": "no"},
                {"sparse_format": "csr"}, {"unknown": 1}):
        r = m3_client.post("/api/encode", json={"model": "bge-m3", "input": "x", **bad})
        assert r.status_code == 400 and set(r.json()) == {"error"}, (bad, r.text)
    assert m3_client.post("/api/encode", json={"model": "nope", "input": "x"}).status_code == 404
    assert m3_client.post("/api/encode", json={"input": "x", "outputs": ["colbert"]}).status_code == 200  # default


@pytest.fixture(scope="module")
def tei_m3(tmp_path_factory):
    """The TEI routes serve the default model: a BGE-M3 folder here."""
    from tests.conftest import open_client
    from embedding_server.settings import Settings

    root = tmp_path_factory.mktemp("tei-m3")
    shutil.copytree(FOLDER, root / "bge-m3")
    client = open_client(Settings(models_dir=root, model="bge-m3"))
    yield client
    client.__exit__(None, None, None)


def test_tei_embed_sparse_and_embed_all_give_bge_m3s_outputs(tei_m3):
    sparse = tei_m3.post("/embed_sparse", json={"inputs": TEXTS}).json()
    for got, want in zip(sparse, REFERENCE["sparse"]):
        assert {str(item["index"]): item["value"] for item in got}.keys() == want.keys()
        assert all(abs(item["value"] - want[str(item["index"])]) <= 1e-5 for item in got)
    colbert = tei_m3.post("/embed_all", json={"inputs": TEXTS}).json()  # ColBERT vectors for a BGE-M3 folder
    for got, want in zip(colbert, REFERENCE["colbert"]):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape and (got * want).sum(1).min() >= 0.99999
    dense = np.asarray(tei_m3.post("/embed", json={"inputs": TEXTS}).json())
    assert (dense * np.asarray(REFERENCE["dense"])).sum(1).min() >= 0.99999
    assert tei_m3.get("/info").json()["outputs"] == ["colbert", "dense", "sparse", "tokens"]


def test_show_lists_the_extra_outputs(m3_client):
    assert m3_client.post("/api/show", json={"model": "bge-m3"}).json()["capabilities"] == [
        "embedding", "colbert", "sparse"]
    assert m3_client.post("/api/show", json={"model": "tiny-bert"}).json()["capabilities"] == ["embedding"]
