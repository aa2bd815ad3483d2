"""Ollama's API through the app with its lifespan: /api/embed and friends, and every error case."""

from __future__ import annotations

import base64
import time
from datetime import datetime

import numpy as np
import pytest

MODEL = "all-minilm-l6-v2"


def embed(client, **body):
    return client.post("/api/embed", json={"model": MODEL, **body})


def encoder_of(client, name=MODEL):
    return client.app.state.engine.registry.resolve(name).encoder


def test_embed_list_shape_counts_and_vectors(client):
    texts = ["hello", "The quick brown fox jumps over the lazy dog."]
    r = embed(client, input=texts)
    assert r.status_code == 200
    body = r.json()
    assert list(body) == ["model", "embeddings", "total_duration", "load_duration", "prompt_eval_count"]
    assert body["model"] == MODEL
    enc = encoder_of(client)
    ids = enc.tokenize(texts)
    assert body["prompt_eval_count"] == sum(len(x) for x in ids) == 3 + len(ids[1])
    assert isinstance(body["total_duration"], int) and body["total_duration"] > 0
    assert body["load_duration"] == 0  # default model already resident
    got = np.array(body["embeddings"], dtype=np.float32)
    assert got.shape == (2, 384)
    assert np.allclose(got, enc.embed(ids), atol=1e-6)


def test_embed_single_string_equals_list_of_one(client):
    a = embed(client, input="hello world").json()["embeddings"]
    b = embed(client, input=["hello world"]).json()["embeddings"]
    assert len(a) == 1 and np.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("empty", ["", []])
def test_empty_input_gives_no_embeddings(client, empty):
    r = embed(client, input=empty)
    assert r.status_code == 200 and r.json()["embeddings"] == [] and r.json()["prompt_eval_count"] == 0


@pytest.mark.parametrize("bad", [[1, 2], ["ok", 3], [["nested"]], {"a": 1}, 5, [None]])
def test_non_string_inputs_are_400(client, bad):
    r = embed(client, input=bad)
    assert r.status_code == 400 and r.json() == {"error": "invalid input type"}


def test_truncation_default_and_refusal(client):
    long = "word " * 1000
    ok = embed(client, input=long).json()
    assert ok["prompt_eval_count"] == 256  # MiniLM's max_seq_length, special tokens included
    refused = embed(client, input=long, truncate=False)
    assert refused.status_code == 400
    assert refused.json() == {"error": "the input length exceeds the context length"}
    assert embed(client, input="short enough", truncate=False).status_code == 200


@pytest.mark.parametrize("raw", [b"{not json", b"{", b"\xff\xfe{}", b'{"model": "all-minilm-l6-v2", "input": "x"} etc',
                                 b'{"model": "all-minilm-l6-v2", "input": "x"}{"input": "y"}'])
def test_bodies_that_are_not_json_are_400_invalid_json(client, raw):
    """Unparseable, not UTF-8, or JSON followed by anything: one message, in Ollama's error shape."""
    r = client.post("/api/embed", content=raw)
    assert r.status_code == 400 and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": "invalid JSON in request body"}


def test_null_body_is_an_empty_request_as_in_go(client):
    r = client.post("/api/embed", content=b"null")
    assert r.status_code == 200 and r.json()["embeddings"] == [] and r.json()["model"] == MODEL
    assert client.post("/api/embeddings", content=b"null").json() == {"error": "model is required"}


@pytest.mark.parametrize("body", [{}, {"model": None}, {"model": ""}])
def test_no_model_is_the_default_model_and_unknown_model_404(client, body):
    """The single-model services' clients send no model; Ollama's always send one (echoed as sent)."""
    r = client.post("/api/embed", json={"input": "什么是机器学习？", **body})
    assert r.status_code == 200 and r.json()["model"] == MODEL  # the served model's name
    assert np.allclose(r.json()["embeddings"], embed(client, input="什么是机器学习？").json()["embeddings"], atol=1e-6)
    assert embed(client, input="x", model=f"{MODEL}:latest").json()["model"] == f"{MODEL}:latest"
    r = client.post("/api/embed", json={"model": "nope", "input": "x"})
    assert r.status_code == 404 and r.json() == {"error": "model 'nope' not found"}
    assert client.post("/api/embeddings", json={"prompt": "x", **body}).json() == {"error": "model is required"}


def test_encoding_format_float_and_base64(client):
    texts = ["什么是机器学习？", "base64 please"]
    floats = embed(client, input=texts, encoding_format="float").json()
    assert floats["embeddings"] == embed(client, input=texts).json()["embeddings"]
    b64 = client.post("/api/embed", json={"input": texts, "encoding_format": "base64"}).json()
    assert b64["model"] == MODEL and b64["prompt_eval_count"] == floats["prompt_eval_count"]
    decoded = np.array([np.frombuffer(base64.b64decode(v), dtype="<f4") for v in b64["embeddings"]])
    assert np.array_equal(decoded, np.array(floats["embeddings"], dtype=np.float32))  # bit-exact float32
    short = embed(client, input="x", dimensions=16, encoding_format="base64").json()["embeddings"]
    assert len(base64.b64decode(short[0])) == 16 * 4
    assert embed(client, input="x", encoding_format=None).json()["embeddings"][0][0] != 0  # null: float
    for bad in ["int8", "FLOAT", ""]:
        r = embed(client, input="x", encoding_format=bad)
        assert r.status_code == 400 and r.json() == {"error": f'invalid encoding_format "{bad}": expected "float" '
                                                              'or "base64"'}
    r = embed(client, input="x", encoding_format=5)
    assert r.json() == {"error": "json: cannot unmarshal number into Go struct field EmbedRequest.encoding_format "
                                 "of type string"}


@pytest.mark.parametrize("field, value, message", [
    ("truncate", "no", "json: cannot unmarshal string into Go struct field EmbedRequest.truncate of type bool"),
    ("truncate", 0, "json: cannot unmarshal number into Go struct field EmbedRequest.truncate of type bool"),
    ("dimensions", "64", "json: cannot unmarshal string into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions", 1.5, "json: cannot unmarshal number 1.5 into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions", True, "json: cannot unmarshal bool into Go struct field EmbedRequest.dimensions of type int"),
    ("model", 5, "json: cannot unmarshal number into Go struct field EmbedRequest.model of type string"),
    ("model", [MODEL], "json: cannot unmarshal array into Go struct field EmbedRequest.model of type string"),
    ("options", [1], "json: cannot unmarshal array into Go struct field EmbedRequest.options of type "
                     "map[string]interface {}"),
    ("keep_alive", True, "Unsupported type: 'bool'"),
    ("keep_alive", "forever", 'time: invalid duration "forever"'),
    ("input", {"text": "x"}, "invalid input type"),
])
def test_wrong_json_types_are_400_with_ollamas_messages(client, field, value, message):
    """As Ollama's Go decoder answers: no coercion ("no" is not false, 1.5 is not 1)."""
    r = client.post("/api/embed", json={"model": MODEL, "input": "x", field: value})
    assert r.status_code == 400 and r.json() == {"error": message}


@pytest.mark.parametrize("body, message", [
    ({"model": MODEL, "prompt": 5}, "json: cannot unmarshal number into Go struct field EmbeddingRequest.prompt "
                                    "of type string"),
    ({"model": MODEL, "prompt": ["x"]}, "json: cannot unmarshal array into Go struct field EmbeddingRequest.prompt "
                                        "of type string"),
    ({"model": {"name": MODEL}, "prompt": "x"}, "json: cannot unmarshal object into Go struct field "
                                                "EmbeddingRequest.model of type string"),
    ({"model": MODEL, "prompt": "x", "keep_alive": [1]}, "Unsupported type: '[]interface {}'"),
])
def test_legacy_wrong_json_types(client, body, message):
    r = client.post("/api/embeddings", json=body)
    assert r.status_code == 400 and r.json() == {"error": message}


@pytest.mark.parametrize("raw, message", [
    (b"", "missing request body"),
    (b"[1, 2]", "json: cannot unmarshal array into Go value of type api.EmbedRequest"),
    (b'"x"', "json: cannot unmarshal string into Go value of type api.EmbedRequest"),
    (b"42", "json: cannot unmarshal number into Go value of type api.EmbedRequest"),
    (b"true", "json: cannot unmarshal bool into Go value of type api.EmbedRequest"),
    (b'{"model": "all-minilm-l6-v2", "input": "x", "dimensions": 1.50}',
     "json: cannot unmarshal number 1.50 into Go struct field EmbedRequest.dimensions of type int"),
])
def test_bodies_go_refuses(client, raw, message):
    r = client.post("/api/embed", content=raw)
    assert r.status_code == 400 and r.json() == {"error": message}


def same_answer(got, want) -> None:
    """Two /api/embed answers for the same texts: same model echoed, token count and vectors."""
    assert got.status_code == 200, got.text
    got, want = got.json(), want.json()
    assert got["model"] == want["model"] and got["prompt_eval_count"] == want["prompt_eval_count"] > 0
    assert np.allclose(got["embeddings"], want["embeddings"], atol=1e-6)


@pytest.mark.parametrize("extra", [
    {"keep_alive": 300}, {"keep_alive": -1}, {"keep_alive": "5m"}, {"keep_alive": "-1s"},
    {"keep_alive": None, "options": None, "truncate": None, "dimensions": None},
    {"options": {"num_ctx": None, "temperature": 0.0}}, {"dimensions": 0}, {"truncate": True},
], ids=["keep_alive-300", "keep_alive--1", "keep_alive-5m", "keep_alive--1s", "nulls", "options", "dimensions-0",
        "truncate-true"])
def test_what_ollama_clients_send_is_answered_as_the_plain_request(client, extra):
    """keep_alive numbers and durations, nulls, options, ``dimensions: 0`` (Go's zero value: unset) and
    ``truncate: true`` change nothing in the answer: the plain request's vectors and token count."""
    plain = embed(client, input=["x", "The quick brown fox"])
    same_answer(embed(client, input=["x", "The quick brown fox"], **extra), plain)
    embed(client, input="x")  # the default model's keep_alive back to its default (for ever) for the next tests
    assert loaded_expiry(client, MODEL) == FOR_EVER


def test_keys_match_in_any_case_as_in_go(client):
    """Go's decoder matches JSON keys to fields case-insensitively: Model, INPUT and Dimensions are read."""
    r = client.post("/api/embed", json={"Model": MODEL, "INPUT": ["x", "y"], "Dimensions": 8})
    same_answer(r, embed(client, input=["x", "y"], dimensions=8))
    assert np.array(r.json()["embeddings"]).shape == (2, 8)


FOR_EVER = "2318-01-01T00:00:00Z"  # Ollama's expires_at for a model that never expires


def loaded_expiry(client, name: str) -> str | None:
    return next((m["expires_at"] for m in client.get("/api/ps").json()["models"] if m["name"] == f"{name}:latest"),
                None)


def test_options_are_ignored_and_keep_alive_sets_the_expiry(client):
    """``options`` (null values, unknown keys) change nothing; ``keep_alive`` is Ollama's: -1 keeps the model for
    ever, a duration sets /api/ps's expires_at that long after the request."""
    plain = embed(client, input="x")
    same_answer(embed(client, input="x", options={"temperature": None, "num_ctx": 2048, "made_up": [1]}), plain)
    same_answer(embed(client, input="x", options=None, truncate=None), plain)
    tiny = {"model": "tiny-bert", "input": "x"}
    for keep_alive in (-1, "-1s"):
        assert client.post("/api/embed", json={**tiny, "keep_alive": keep_alive}).status_code == 200
        assert loaded_expiry(client, "tiny-bert") == FOR_EVER
    sent = time.time()
    assert client.post("/api/embed", json={**tiny, "keep_alive": "7m"}).status_code == 200
    expires = datetime.fromisoformat(loaded_expiry(client, "tiny-bert").replace("Z", "+00:00")).timestamp()
    assert sent + 420 - 1 <= expires <= time.time() + 420 + 1  # 7 minutes after the request (second precision)
    client.post("/api/embed", json=tiny)  # back to the default keep_alive


def test_dimensions_keep_first_components_renormalised(client):
    full = np.array(embed(client, input="dimension test").json()["embeddings"][0])
    short = np.array(embed(client, input="dimension test", dimensions=64).json()["embeddings"][0])
    assert short.shape == (64,)
    assert np.isclose(np.linalg.norm(short), 1.0, atol=1e-5)
    assert np.allclose(short, full[:64] / np.linalg.norm(full[:64]), atol=1e-6)
    assert embed(client, input="x", dimensions=-3).status_code == 400
    assert embed(client, input="x", dimensions=10_000).status_code == 400


@pytest.mark.parametrize("name", [MODEL, f"{MODEL}:latest", "text-embedding-3-small", "text-embedding-3-small:latest"])
def test_names_tags_and_aliases_resolve_to_same_model(client, name):
    ref = embed(client, input="same model").json()["embeddings"]
    r = client.post("/api/embed", json={"model": name, "input": "same model"})
    assert r.status_code == 200 and np.allclose(r.json()["embeddings"], ref, atol=1e-6)


@pytest.mark.parametrize("headers", [{}, {"content-type": "application/x-www-form-urlencoded"},
                                     {"content-type": "text/plain"}, {"content-type": "application/json"}],
                         ids=["none", "curl-d", "text", "json"])
def test_body_read_as_json_whatever_the_content_type_like_ollama(client, headers):
    """Ollama reads every body as JSON: ``curl -d`` sends form-urlencoded, some clients send none at all."""
    raw = b'{"model": "all-minilm-l6-v2", "input": ["curl -d", "sent as a form"]}'
    r = client.post("/api/embed", content=raw, headers=headers)
    same_answer(r, embed(client, input=["curl -d", "sent as a form"]))
    assert len(r.json()["embeddings"]) == 2


def test_legacy_embeddings(client):
    r = client.post("/api/embeddings", json={"model": MODEL, "prompt": "hello"})
    assert list(r.json()) == ["embedding"]
    assert np.allclose(r.json()["embedding"], embed(client, input="hello").json()["embeddings"][0], atol=1e-6)
    assert client.post("/api/embeddings", json={"model": MODEL, "prompt": ""}).json() == {"embedding": []}
    assert client.post("/api/embeddings", json={"model": "nope", "prompt": "x"}).status_code == 404


def test_tags_show_ps_version_root(client):
    tags = client.get("/api/tags").json()["models"]
    names = {m["name"] for m in tags}
    assert {f"{MODEL}:latest", "tiny-bert:latest", "tiny-xlmr:latest"} <= names
    for m in tags:
        assert {"name", "model", "modified_at", "size", "digest", "details"} <= set(m)
    show = client.post("/api/show", json={"model": MODEL}).json()
    assert show["capabilities"] == ["embedding"]
    assert show["model_info"]["general.architecture"] == "bert"
    assert show["model_info"]["bert.embedding_length"] == 384
    assert show["model_info"]["bert.context_length"] == 256
    assert show["details"]["family"] == "bert"
    assert client.post("/api/show", json={"model": "nope"}).status_code == 404
    assert client.post("/api/show", json={"name": MODEL}).status_code == 200  # older clients send "name"
    ps = client.get("/api/ps").json()["models"]
    assert f"{MODEL}:latest" in {m["name"] for m in ps}
    assert isinstance(client.get("/api/version").json()["version"], str)
    root = client.get("/")
    assert root.status_code == 200 and root.text == "Ollama is running"
    assert client.head("/").status_code == 200


def test_lazy_model_reports_load_duration_then_zero(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert")
    first = c.post("/api/embed", json={"model": "tiny-xlmr", "input": "first use loads it"}).json()
    assert first["load_duration"] > 0
    again = c.post("/api/embed", json={"model": "tiny-xlmr", "input": "now resident"}).json()
    assert again["load_duration"] == 0
    assert "tiny-xlmr:latest" in {m["name"] for m in c.get("/api/ps").json()["models"]}


def test_show_reports_the_dtype_actually_served(make_client, tiny_models_dir, tmp_path):
    """A checkpoint stored in float16 is served in float32 (transformers 5 would keep float16), and says so."""
    import shutil

    import torch
    from transformers import AutoModel

    folder = tmp_path / "models" / "half"
    shutil.copytree(tiny_models_dir / "tiny-bert", folder)
    AutoModel.from_pretrained(folder).to(torch.float16).save_pretrained(folder)
    client = make_client(models_dir=folder.parent, model="half")
    assert client.post("/api/embed", json={"model": "half", "input": "x"}).status_code == 200
    assert client.app.state.engine.registry.resolve("half").encoder.details.dtype == "float32"
    show = client.post("/api/show", json={"model": "half"}).json()
    assert show["details"]["quantization_level"] == "F32"
    (ps,) = client.get("/api/ps").json()["models"]
    assert ps["details"]["quantization_level"] == "F32"
