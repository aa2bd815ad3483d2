"""OpenAI's API through the app: /v1/embeddings (float, base64, token arrays), /v1/models, errors."""

from __future__ import annotations

import base64
import json
import tracemalloc

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


def _traced_peak_mb(client, body: bytes):
    """(response, peak MB of Python allocations above the level before) for one POST of ``body``.

    tracemalloc sees every Python object the app builds for the request, on any thread (the app runs in
    the TestClient's portal thread), and counts them exactly: the peak is machine-independent, unlike RSS."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        r = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
        return r, (tracemalloc.get_traced_memory()[1] - before) / 1e6
    finally:
        if not was_tracing:
            tracemalloc.stop()


def test_huge_arrays_are_rejected_cheaply(client):
    """Arrays of a million elements are refused without per-element validation (which once took gigabytes).

    The bound is the Python memory allocated while the request is handled, at most 32 bytes per element of
    the array: parsing the JSON costs 8 (one list slot; small ints and one-character strings are shared
    objects) and the raw body 2-3 more per copy. Measured: ~12.7 MB for the million ids, ~14.5 MB for the
    mixed array. With ``input`` declared as OpenAI's union ``str | list[str] | list[int] | list[list[int]]``,
    so that pydantic validates it element by element (an error per element per branch), the same 3 MB mixed
    body peaked at 2,520 MB on a bare FastAPI app (5.7 GB RSS), and this app so patched (in memory) peaked
    at 391 MB for a 200,000-element one (~1,950 bytes per element, allowed 32)."""
    n = 1_000_000
    ids = json.dumps({"model": MODEL, "input": [[1] * n]}, separators=(",", ":")).encode()
    mixed = json.dumps({"model": MODEL, "input": ["x", 1] * (n // 2)}, separators=(",", ":")).encode()
    allowed_mb = 32 * n / 1e6

    r, ids_mb = _traced_peak_mb(client, ids)
    err = assert_openai_error(r, 400, param="input", code="limit_exceeded")
    assert "max_request_tokens=300000" in err["message"]
    r, mixed_mb = _traced_peak_mb(client, mixed)
    assert_openai_error(r, 400, param="input")
    print(f"\n[huge arrays] Python allocations peaked at +{ids_mb:.1f} MB (1M ids), +{mixed_mb:.1f} MB "
          f"(1M mixed); allowed {allowed_mb:.0f} MB")
    assert ids_mb < allowed_mb, f"refusing {n} token ids allocated {ids_mb:.0f} MB"
    assert mixed_mb < allowed_mb, f"refusing a {n}-element mixed array allocated {mixed_mb:.0f} MB"
    assert_openai_error(create(client, input=[True, False]), 400, param="input")  # booleans are not token ids
