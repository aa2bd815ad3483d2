"""POST /embeddings through the app: the small FastAPI services' {texts, normalize}, and OpenAI's body there."""

from __future__ import annotations

import json

import numpy as np
import pytest

MODEL = "all-minilm-l6-v2"
TEXTS = ["什么是机器学习？", "Machine learning is a field of AI.", ""]


def ollama_vectors(client, texts, model=MODEL):
    return np.array(client.post("/api/embed", json={"model": model, "input": texts}).json()["embeddings"])


def assert_detail(r, status, message=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"], body
    if message is not None:
        assert body["detail"] == message


def test_texts_normalized_shape_and_vectors(client):
    r = client.post("/embeddings", json={"texts": TEXTS, "normalize": True})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert list(body) == ["embeddings", "count", "total_time_ms"]
    assert body["count"] == 3 and isinstance(body["total_time_ms"], float) and 0 < body["total_time_ms"] < 60_000
    got = np.array(body["embeddings"])
    assert got.shape == (3, 384) and np.allclose(got, ollama_vectors(client, TEXTS), atol=1e-6)
    default = client.post("/embeddings", json={"texts": TEXTS}).json()["embeddings"]  # normalize defaults to true
    assert np.allclose(default, got, atol=1e-6)


def test_normalize_false_gives_the_pooled_vectors(client):
    raw = np.array(client.post("/embeddings", json={"texts": TEXTS, "normalize": False}).json()["embeddings"])
    norms = np.linalg.norm(raw, axis=1)
    assert raw.shape == (3, 384) and not np.allclose(norms, 1.0, atol=1e-2)
    assert np.allclose(raw / norms[:, None], ollama_vectors(client, TEXTS), atol=1e-5)
    encoder = client.app.state.engine.registry.resolve(MODEL).encoder
    unit = encoder.embed(encoder.tokenize(TEXTS[:1]))[0]
    assert np.allclose(raw[0] / norms[0], unit, atol=1e-5)


def test_model_is_optional_and_can_be_named(client):
    r = client.post("/embeddings", json={"texts": ["x"], "model": "tiny-bert"})
    assert np.allclose(r.json()["embeddings"], ollama_vectors(client, ["x"], "tiny-bert"), atol=1e-6)
    assert_detail(client.post("/embeddings", json={"texts": ["x"], "model": "nope"}), 404, "model 'nope' not found")


@pytest.mark.parametrize("headers", [{}, {"content-type": "text/plain"}, {"content-type": "application/json"}])
def test_body_read_as_json_whatever_the_content_type(client, headers):
    """``requests.post(url, data=json.dumps(body))`` sends no content type at all."""
    r = client.post("/embeddings", content=json.dumps({"texts": TEXTS, "normalize": False}), headers=headers)
    assert r.status_code == 200 and r.json()["count"] == 3
    as_json = client.post("/embeddings", json={"texts": TEXTS, "normalize": False}).json()["embeddings"]
    assert np.allclose(r.json()["embeddings"], as_json, atol=1e-6)  # the body's fields were all read
    assert not np.allclose(np.linalg.norm(as_json, axis=1), 1.0, atol=1e-2)


def test_empty_texts_is_a_clear_400(client):
    assert_detail(client.post("/embeddings", json={"texts": []}), 400,
                  '"texts" must not be empty: send at least one text')


@pytest.mark.parametrize("raw, contains", [
    (b'{"texts": "one string"}', "texts: Input should be a valid list"),
    (b'{"texts": ["a", 1]}', "texts.1: Input should be a valid string"),
    (b'{"texts": [["a"]]}', "texts.0: Input should be a valid string"),
    (b'{"texts": null}', "texts: Input should be a valid list"),
    (b'{"normalize": true}', "texts: Field required"),
    (b'{"texts": ["a"], "normalize": "yes"}', "normalize: Input should be a valid boolean"),
    (b'{"texts": ["a"], "normalize": 1}', "normalize: Input should be a valid boolean"),
    (b'{"texts": ["a"], "model": 5}', "model: Input should be a valid string"),
    (b"[1, 2]", "Input should be a valid dictionary"),
    (b"{not json", "invalid JSON in request body"),
    (b"", "invalid JSON in request body"),
    (b'{"texts": ["a\\ud800"]}', None),
])
def test_bad_bodies_are_400_in_fastapis_detail_shape(client, raw, contains):
    r = client.post("/embeddings", content=raw)
    assert_detail(r, 400)
    assert contains is None or contains in r.json()["detail"], r.json()


def test_too_many_texts_and_wrong_method(client):
    r = client.post("/embeddings", json={"texts": ["x"] * 2049})
    assert_detail(r, 400)
    assert "max_inputs=2048" in r.json()["detail"]
    assert_detail(client.get("/embeddings"), 405)


def test_openai_body_is_answered_as_v1_embeddings(client):
    """OpenAI clients whose base URL lacks /v1 post here: same answer, same errors."""
    for body in [{"model": MODEL, "input": TEXTS[:2]}, {"model": MODEL, "input": "one"},
                 {"model": MODEL, "input": [[9906, 1917]], "encoding_format": "base64", "dimensions": 32}]:
        here, there = client.post("/embeddings", json=body), client.post("/v1/embeddings", json=body)
        assert here.status_code == 200 and here.json() == there.json()
    for body in [{"input": "x"}, {"model": MODEL, "input": []}, {"model": MODEL, "input": [1.5]},
                 {"model": MODEL, "input": "x", "encoding_format": "int8"}, {"model": "nope", "input": "x"},
                 {"model": MODEL, "input": None, "texts": ["x"]}]:
        here, there = client.post("/embeddings", json=body), client.post("/v1/embeddings", json=body)
        assert here.status_code == there.status_code and here.json() == there.json(), body
        assert set(here.json()["error"]) == {"message", "type", "param", "code"}


def test_api_key_in_either_header_and_errors_in_each_shape(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", api_key="k1,k2")
    texts, openai_body = {"texts": ["x"]}, {"model": "tiny-bert", "input": "x"}
    for headers in [{"X-API-Key": "k2"}, {"x-api-key": " k1 "}, {"Authorization": "Bearer k1"}]:
        assert c.post("/embeddings", json=texts, headers=headers).json()["count"] == 1
        assert c.post("/embeddings", json=openai_body, headers=headers).json()["object"] == "list"
    message = "invalid or missing API key (send Authorization: Bearer <key> or X-API-Key: <key>)"
    for headers in [{}, {"X-API-Key": "wrong"}, {"X-API-Key": "Bearer k1"}, {"Authorization": "k1"}]:
        assert_detail(c.post("/embeddings", json=texts, headers=headers), 401, message)
        # the key is checked before the body is read: OpenAI's body too gets the route's own shape
        assert_detail(c.post("/embeddings", json=openai_body, headers=headers), 401, message)
    assert_detail(c.post("/embeddings", json={"texts": []}), 401)  # the key is checked before the body


def test_body_limit_in_the_detail_shape(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", max_body_bytes=1024)
    big = json.dumps({"texts": ["word " * 500]})
    assert_detail(c.post("/embeddings", content=big), 413, "request body too large: limit max_body_bytes=1024")

    def chunks():  # no content-length: refused while the body streams in
        for _ in range(10):
            yield big.encode()[:500]

    assert_detail(c.post("/embeddings", content=chunks()), 413)


def test_documented_in_openapi(client):
    op = client.get("/openapi.json").json()["paths"]["/embeddings"]["post"]
    schemas = op["requestBody"]["content"]["application/json"]["schema"]["anyOf"]
    assert [s["title"] for s in schemas] == ["TextsBody", "EmbeddingsBody"]
    assert {"200", "4XX", "5XX"} <= set(op["responses"])
