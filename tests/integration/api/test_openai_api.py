"""OpenAI's API through the app: /v1/embeddings (float, base64, token arrays), /v1/models, errors."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from tests.support.cl100k import cl100k

MODEL = "all-minilm-l6-v2"


def create(client, **body):
    return client.post("/v1/embeddings", json={"model": MODEL, **body})


def ollama_vectors(client, texts):
    return np.array(client.post("/api/embed", json={"model": MODEL, "input": texts}).json()["embeddings"])


def assert_openai_error(r, status, param=None, code=None):
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if param is not None:
        assert body["error"]["param"] == param
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


def test_float_response_shape(client):
    texts = ["first text", "second, longer text about embeddings"]
    body = create(client, input=texts).json()
    assert body["object"] == "list" and body["model"] == MODEL
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert all(d["object"] == "embedding" for d in body["data"])
    tokens = sum(len(x) for x in client.app.state.engine.registry.resolve(MODEL).encoder.tokenize(texts))
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    got = np.array([d["embedding"] for d in body["data"]])
    assert np.allclose(got, ollama_vectors(client, texts), atol=1e-6)


def test_base64_is_little_endian_float32_of_the_same_vector(client):
    texts = ["base64 check", "another one"]
    floats = np.array([d["embedding"] for d in create(client, input=texts).json()["data"]], dtype=np.float32)
    data = create(client, input=texts, encoding_format="base64").json()["data"]
    decoded = np.vstack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])
    assert decoded.shape == (2, 384)
    assert np.array_equal(decoded, floats)  # exact: float32 printed shortest, parsed back


def test_dimensions(client):
    full = np.array(create(client, input="dims").json()["data"][0]["embedding"])
    short = np.array(create(client, input="dims", dimensions=32).json()["data"][0]["embedding"])
    assert np.allclose(short, full[:32] / np.linalg.norm(full[:32]), atol=1e-6)
    assert_openai_error(create(client, input="x", dimensions=0), 400, param="dimensions")
    assert_openai_error(create(client, input="x", dimensions=385), 400, param="dimensions")


def test_token_arrays_are_cl100k_ids_by_default(client):
    texts = ["Token arrays as langchain sends them.", "Ünïcödé and emoji 🚀 survive decoding"]
    ids = [cl100k().encode(t) for t in texts]
    expected = ollama_vectors(client, texts)
    many = create(client, input=ids).json()
    assert np.allclose([d["embedding"] for d in many["data"]], expected, atol=1e-6)
    one = create(client, input=ids[0]).json()  # a single flat [int] array
    assert len(one["data"]) == 1 and np.allclose(one["data"][0]["embedding"], expected[0], atol=1e-6)
    # usage counts the served model's tokens, not cl100k's
    assert one["usage"]["prompt_tokens"] == len(client.app.state.engine.registry.resolve(MODEL).encoder.tokenize(texts[:1])[0])


@pytest.mark.parametrize("bad", [[100256], [200000], [-1], [[5, 100300]]])
def test_token_ids_out_of_cl100k_range_are_400(client, bad):
    err = assert_openai_error(create(client, input=bad), 400, param="input")
    assert "out of range" in err["message"]


def test_model_vocabulary_and_reject_modes(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", token_ids="model")
    encoder = c.app.state.engine.registry.resolve("tiny-bert").encoder
    text = "the quick brown fox"
    raw = encoder.tokenizer(text, add_special_tokens=False)["input_ids"]
    by_ids = c.post("/v1/embeddings", json={"model": "tiny-bert", "input": [raw]}).json()["data"][0]["embedding"]
    by_text = c.post("/v1/embeddings", json={"model": "tiny-bert", "input": text}).json()["data"][0]["embedding"]
    assert np.allclose(by_ids, by_text, atol=1e-6)
    err = assert_openai_error(c.post("/v1/embeddings", json={"model": "tiny-bert", "input": [[1, 99999]]}), 400)
    assert "vocabulary" in err["message"]

    r = make_client(models_dir=tiny_models_dir, model="tiny-bert", token_ids="reject")
    assert_openai_error(r.post("/v1/embeddings", json={"model": "tiny-bert", "input": [[1, 2]]}), 400, param="input")


@pytest.mark.parametrize("body, param", [
    ({"input": []}, "input"),
    ({"input": ""}, "input"),
    ({"input": ["ok", ""]}, "input"),
    ({"input": [[]]}, "input"),
    ({"input": ["text", 5]}, "input"),
    ({"input": [["nested"]]}, "input"),
    ({"input": None}, "input"),
    ({"input": "x", "encoding_format": "binary"}, "encoding_format"),
    ({"input": "x", "dimensions": "ten"}, "dimensions"),
])
def test_invalid_requests_are_400_never_422(client, body, param):
    assert_openai_error(create(client, **body), 400, param=param)


def test_missing_model_invalid_json_and_unknown_model(client):
    assert_openai_error(client.post("/v1/embeddings", json={"input": "x"}), 400, param="model")
    assert_openai_error(client.post("/v1/embeddings", content=b"{oops", headers={"content-type": "application/json"}), 400)
    assert_openai_error(client.post("/v1/embeddings", json={"model": "nope", "input": "x"}), 404,
                        param="model", code="model_not_found")


def test_too_many_inputs(client):
    err = assert_openai_error(create(client, input=["x"] * 2049), 400)
    assert "2048" in err["message"]
    assert len(create(client, input=["x"] * 2048).json()["data"]) == 2048


def test_models_list_and_retrieve(client):
    data = client.get("/v1/models").json()
    assert data["object"] == "list"
    ids = {m["id"] for m in data["data"]}
    assert {MODEL, "tiny-bert", "tiny-xlmr", "text-embedding-3-small"} <= ids
    for m in data["data"]:
        assert m["object"] == "model" and isinstance(m["created"], int) and m["owned_by"]
    assert client.get(f"/v1/models/{MODEL}").json()["id"] == MODEL
    assert_openai_error(client.get("/v1/models/nope"), 404, code="model_not_found")
    assert_openai_error(client.get("/v1/nothing-here"), 404)


def test_huge_arrays_are_rejected_cheaply(client):
    """Multi-megabyte inputs are refused without per-element validation errors (they once took gigabytes)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    err = assert_openai_error(create(client, input=[[1] * 1_000_000]), 400, param="input", code="limit_exceeded")
    assert "max_request_tokens=300000" in err["message"]
    assert_openai_error(create(client, input=["x", 1] * 500_000), 400, param="input")
    assert_openai_error(create(client, input=[True, False]), 400, param="input")  # booleans are not token ids
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500, f"peak RSS grew {grown_mb:.0f} MB"
