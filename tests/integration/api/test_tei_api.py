"""TEI's API through the app: /embed, /embed_all, /embed_sparse, /similarity, /tokenize, /decode, /info and POST /,
with TEI's defaults, shapes, error bodies and statuses; vectors equal /api/embed's."""

from __future__ import annotations

import json
import shutil
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import open_client
from embedding_server.settings import Settings

MODEL = "all-minilm-l6-v2"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Embeddings map text to vectors.", "Ünïcödé 🚀 text"]
LONG = "vector search engines rank documents by cosine similarity " * 8  # over tiny-bert's 32 tokens
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def api_embed(client, texts, model=MODEL) -> np.ndarray:
    return np.array(client.post("/api/embed", json={"model": model, "input": texts}).json()["embeddings"])


def embed(client, **body) -> np.ndarray:
    r = client.post("/embed", json=body)
    assert r.status_code == 200, r.text
    return np.array(r.json())


def tei_error(r, status: int, error_type: str) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type, body
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def hidden_states(client, texts, model=MODEL):
    """(last hidden states per text, mean-pooled vectors) from the transformers forward of the loaded weights."""
    encoder = client.app.state.engine.registry.resolve(model).encoder
    batch = encoder.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder.model(**batch).last_hidden_state
    mask = batch["attention_mask"]
    pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    return [hidden[i, :int(n)].numpy() for i, n in enumerate(mask.sum(1))], pooled.numpy()


@pytest.fixture(scope="module")
def tei(tmp_path_factory, tiny_models_dir):
    """tiny-bert with sentence-transformers prompts as the default model; at most 4 inputs a request."""
    root = tmp_path_factory.mktemp("tei-models")
    shutil.copytree(tiny_models_dir / "tiny-bert", root / "prompted")
    (root / "prompted" / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}}))
    c = open_client(Settings(models_dir=root, model="prompted", max_inputs=4))
    yield c
    c.__exit__(None, None, None)


# ----- /embed and POST / -------------------------------------------------------------------------------------------
def test_embed_equals_api_embed(client):
    want = api_embed(client, TEXTS)
    assert np.allclose(embed(client, inputs=TEXTS), want, atol=1e-6)
    one = embed(client, inputs=TEXTS[0])
    assert one.shape == (1, 384) and cosines(one, want[:1]).min() >= 0.9999
    r = client.post("/embed", json={"inputs": TEXTS})
    assert int(r.headers["x-compute-tokens"]) == sum(len(x) for x in client.app.state.engine.registry.resolve(
        MODEL).encoder.tokenize(TEXTS))


def test_normalize_false_is_the_pooled_vector(client):
    raw = embed(client, inputs=TEXTS, normalize=False)
    _, pooled = hidden_states(client, TEXTS)
    assert cosines(raw, pooled).min() >= 0.9999
    assert np.allclose(np.linalg.norm(raw, axis=1), np.linalg.norm(pooled, axis=1), rtol=1e-4)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-2)
    assert np.allclose(raw / np.linalg.norm(raw, axis=1, keepdims=True), api_embed(client, TEXTS), atol=1e-6)


def test_dimensions(client):
    full = embed(client, inputs=TEXTS, normalize=False)
    assert np.allclose(embed(client, inputs=TEXTS, normalize=False, dimensions=32), full[:, :32], atol=1e-6)
    short = embed(client, inputs=TEXTS, dimensions=32)
    assert np.allclose(short, full[:, :32] / np.linalg.norm(full[:, :32], axis=1, keepdims=True), atol=1e-6)
    for bad in (0, -1, 385):
        tei_error(client.post("/embed", json={"inputs": "x", "dimensions": bad}), 422, "Validation")
    assert embed(client, inputs="x", dimensions=None).shape == (1, 384)


def test_token_ids_are_the_models_whole_sequences(client):
    tokens = client.post("/tokenize", json={"inputs": TEXTS}).json()
    ids = [[t["id"] for t in seq] for seq in tokens]  # special tokens included, as /tokenize gives them
    want = api_embed(client, TEXTS)
    assert np.allclose(embed(client, inputs=ids), want, atol=1e-6)
    assert np.allclose(embed(client, inputs=ids[0]), want[:1], atol=1e-6)  # one flat id list
    assert np.allclose(embed(client, inputs=[TEXTS[0], ids[1], TEXTS[2]]), want, atol=1e-6)  # mixed batch
    msg = tei_error(client.post("/embed", json={"inputs": [101, 10**6, 102]}), 422, "Validation")
    assert "vocabulary" in msg


def test_root_route_embeds_or_compares_by_the_body(client):
    body = {"inputs": TEXTS, "normalize": True, "truncate": True, "truncation_direction": "right",
            "encoding_format": "float"}  # what huggingface_hub's feature_extraction may send; unknown keys ignored
    r = client.post("/", json=body)
    assert r.status_code == 200 and np.allclose(r.json(), api_embed(client, TEXTS), atol=1e-6)
    pair = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS[1:]}, "parameters": {}}
    assert client.post("/", json=pair).json() == client.post("/similarity", json=pair).json()
    assert client.get("/").text == "Ollama is running" and client.head("/").status_code == 200
    tei_error(client.post("/", json={"inputs": {"source_sentence": "x"}}), 422, "Validation")
    tei_error(client.post("/", json={"input": "x"}), 422, "Validation")
    tei_error(client.post("/", content=b"{oops", headers={"content-type": "application/json"}), 400, "Validation")


# ----- truncation and prompts --------------------------------------------------------------------------------------
def test_truncate_defaults_to_the_setting(tei, make_client, tiny_models_dir):
    assert embed(tei, inputs=LONG).shape == (1, 32)  # EMBED_AUTO_TRUNCATE is true by default
    assert np.allclose(embed(tei, inputs=LONG, truncate=None), embed(tei, inputs=LONG, truncate=True))
    tei_error(tei.post("/embed", json={"inputs": LONG, "truncate": False}), 422, "Validation")
    strict = make_client(models_dir=tiny_models_dir, model="tiny-xlmr", auto_truncate=False)
    tei_error(strict.post("/embed", json={"inputs": LONG * 2}), 422, "Validation")
    assert embed(strict, inputs=LONG * 2, truncate=True).shape == (1, 32)
    info = strict.get("/info").json()
    assert info["auto_truncate"] is False and info["model_type"] == {"embedding": {"pooling": "cls"}}
    assert info["max_input_length"] == 48 and info["model_id"] == "tiny-xlmr"


@pytest.mark.parametrize("direction", ["Left", "left", "LEFT", "Right", "right"])
def test_truncation_direction_in_either_casing(tei, direction):
    ids = [t["id"] for t in tei.post("/tokenize", json={"inputs": LONG}).json()[0]]  # untruncated
    kept = ids[1:31] if direction.lower() == "right" else ids[-31:-1]
    want = embed(tei, inputs=[ids[:1] + kept + ids[-1:]])
    assert np.allclose(embed(tei, inputs=LONG, truncation_direction=direction), want, atol=1e-6)
    states = tei.post("/embed_all", json={"inputs": LONG, "truncation_direction": direction}).json()
    assert len(states[0]) == 32


def test_truncation_direction_must_be_left_or_right(tei):
    for bad in ("middle", None, 1):
        tei_error(tei.post("/embed", json={"inputs": "x", "truncation_direction": bad}), 422, "Validation")


def test_prompt_name(tei):
    text = "the quick brown fox"
    want = embed(tei, inputs="query: " + text)
    assert np.allclose(embed(tei, inputs=text, prompt_name="query"), want, atol=1e-6)
    assert not np.allclose(embed(tei, inputs=text, prompt_name="passage"), want, atol=1e-3)
    msg = tei_error(tei.post("/embed", json={"inputs": text, "prompt_name": "nope"}), 422, "Validation")
    assert "nope" in msg and "query" in msg
    tokens = tei.post("/tokenize", json={"inputs": text, "prompt_name": "query"}).json()[0]
    assert tokens[-2]["stop"] == len("query: " + text)
    plain = tei.post("/embed_all", json={"inputs": text}).json()[0]
    assert len(tei.post("/embed_all", json={"inputs": text, "prompt_name": "query"}).json()[0]) == len(tokens) > len(plain)
    scores = tei.post("/similarity", json={"inputs": {"source_sentence": text, "sentences": [text, "air"]},
                                           "parameters": {"prompt_name": "query"}}).json()
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    tei_error(tei.post("/tokenize", json={"inputs": text, "prompt_name": "nope"}), 422, "Validation")


# ----- /embed_all, /embed_sparse, /similarity ----------------------------------------------------------------------
def test_embed_all_is_every_tokens_last_hidden_state(client):
    r = client.post("/embed_all", json={"inputs": TEXTS[:2]})
    assert r.status_code == 200
    got = r.json()
    states, _ = hidden_states(client, TEXTS[:2])
    assert [np.array(g).shape for g in got] == [s.shape for s in states]
    for g, s in zip(got, states):
        assert np.allclose(g, s, atol=1e-4)
    one = client.post("/embed_all", json={"inputs": TEXTS[0]}).json()
    assert len(one) == 1 and np.allclose(one[0], got[0], atol=1e-4)


def test_embed_sparse_without_a_sparse_head_is_424(client):
    for inputs in ("x", ["x", ""], [101, 102]):
        msg = tei_error(client.post("/embed_sparse", json={"inputs": inputs}), 424, "Backend")
        assert msg == "Backend error: Model is not an embedding model with SPLADE pooling"
    for bad in (5, [2**32], [[1, -1]], ["x", [2**40]]):  # a body TEI cannot deserialise is refused first
        for path in ("/embed_sparse", "/embed", "/embed_all"):
            tei_error(client.post(path, json={"inputs": bad}), 422, "Validation")


def test_embed_sparse_with_bge_m3_heads_and_api_keys(make_client, tmp_path):
    shutil.copytree(FIXTURES / "tiny-bge-m3", tmp_path / "tiny-bge-m3")
    reference = json.loads((FIXTURES / "tiny-bge-m3.flagembedding.json").read_text())
    c = make_client(models_dir=tmp_path, model="tiny-bge-m3", api_key="k1")
    key = {"Authorization": "Bearer k1"}
    r = c.post("/embed_sparse", json={"inputs": reference["texts"]}, headers=key)
    assert r.status_code == 200, r.text
    for got, want in zip(r.json(), reference["sparse"]):
        assert [set(e) for e in got] == [{"index", "value"}] * len(got)
        assert {str(e["index"]): e["value"] for e in got} == pytest.approx(want, abs=1e-5)
    for path in ("/embed", "/embed_sparse", "/tokenize"):
        tei_error(c.post(path, json={"inputs": "x"}), 401, "Validation")
    tei_error(c.get("/info"), 401, "Validation")
    assert c.get("/info", headers=key).json()["model_type"] == {"embedding": {"pooling": "cls"}}


def test_similarity_is_the_cosine_to_the_source(client):
    body = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS}}
    scores = client.post("/similarity", json=body).json()
    vectors = api_embed(client, TEXTS)
    assert np.allclose(scores, vectors @ vectors[0], atol=1e-5) and scores[0] == pytest.approx(1.0, abs=1e-5)
    params = {**body, "parameters": {"truncate": True, "truncation_direction": "Left", "prompt_name": None}}
    assert np.allclose(client.post("/similarity", json=params).json(), scores, atol=1e-6)
    msg = tei_error(client.post("/similarity", json={"inputs": {"source_sentence": "x", "sentences": []}}), 400, "Empty")
    assert msg == "`inputs.sentences` cannot be empty"
    tei_error(client.post("/similarity", json={"inputs": {"source_sentence": "", "sentences": ["x"]}}), 400, "Empty")
    tei_error(client.post("/similarity", json={"inputs": {"source_sentence": "x", "sentences": [1]}}), 422, "Validation")
    tei_error(client.post("/similarity", json={"inputs": {"source_sentence": "x", "sentences": "y"}}), 422, "Validation")


# ----- /tokenize and /decode ---------------------------------------------------------------------------------------
def test_tokenize(client):
    text = "Héllo wörld 🚀"
    (tokens,) = client.post("/tokenize", json={"inputs": text}).json()
    assert [set(t) for t in tokens] == [{"id", "text", "special", "start", "stop"}] * len(tokens)
    assert tokens[0] == {"id": 101, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert tokens[-1] == {"id": 102, "text": "[SEP]", "special": True, "start": None, "stop": None}
    raw = text.encode()
    assert [(t["text"], t["start"], t["stop"]) for t in tokens[1:-1]] == [("Héllo", 0, 6), ("wörld", 7, 13),
                                                                         ("🚀", 14, 18)]  # UTF-8 byte offsets
    assert all(raw[t["start"]:t["stop"]].decode() == t["text"] for t in tokens[1:-1])
    bare = client.post("/tokenize", json={"inputs": [text, "x"], "add_special_tokens": False}).json()
    assert bare[0] == tokens[1:-1] and [t["text"] for t in bare[1]] == ["x"]
    long = client.post("/tokenize", json={"inputs": "word " * 600}).json()[0]
    assert len(long) == 602  # never truncated


def test_tokenize_errors(client, tei):
    assert tei_error(client.post("/tokenize", json={"inputs": []}), 400, "Empty") == "`inputs` cannot be empty"
    msg = tei_error(client.post("/tokenize", json={"inputs": ["x", ""]}), 400, "Empty")
    assert msg == "Input validation error: `inputs` cannot be empty"
    msg = tei_error(client.post("/tokenize", json={"inputs": "x" * (256 * 250 + 1)}), 422, "Validation")
    assert msg == "Input validation error: `inputs` must have less than 64000 characters. Given: 64001"
    for bad in (5, [1], None, [["x"]]):
        tei_error(client.post("/tokenize", json={"inputs": bad}), 422, "Validation")
    tei_error(client.post("/tokenize", json={"inputs": "x", "add_special_tokens": "yes"}), 422, "Validation")
    lone_surrogate = b'{"inputs": "bad \\ud800 text"}'  # a JSON escape Python keeps and no tokenizer takes
    tei_error(client.post("/tokenize", content=lone_surrogate, headers={"content-type": "application/json"}),
              422, "Validation")


def test_decode(client):
    ids = [t["id"] for t in client.post("/tokenize", json={"inputs": "Hello, world!"}).json()[0]]
    assert client.post("/decode", json={"ids": ids}).json() == ["hello, world!"]
    assert client.post("/decode", json={"ids": [ids, ids[1:2]], "skip_special_tokens": False}).json() == [
        "[CLS] hello, world! [SEP]", "hello"]
    assert client.post("/decode", json={"ids": [ids[1], 4_000_000_000]}).json() == ["hello"]  # unknown id skipped
    msg = tei_error(client.post("/decode", json={"ids": []}), 400, "Empty")
    assert msg == "Input validation error: `input_ids` cannot be empty"
    tei_error(client.post("/decode", json={"ids": [[1], []]}), 400, "Empty")
    for bad in ([-1], [2**32], ["x"], [1.5], [True], "x", None):
        tei_error(client.post("/decode", json={"ids": bad}), 422, "Validation")


# ----- /info, limits, errors ---------------------------------------------------------------------------------------
def test_info(client):
    info = client.get("/info").json()
    settings = client.app.state.settings
    assert info == {
        "model_id": MODEL, "model_sha": None, "model_dtype": "float32", "served_model_name": MODEL,
        "model_type": {"embedding": {"pooling": "mean"}}, "max_concurrent_requests": settings.max_queued_inputs,
        "max_input_length": 256, "max_batch_tokens": settings.max_batch_tokens,
        "max_batch_requests": settings.max_batch_size, "max_client_batch_size": settings.max_inputs,
        "auto_truncate": True, "tokenization_workers": 2, "version": info["version"], "sha": None, "docker_label": None,
        "outputs": ["dense", "tokens"], "models": info["models"]}
    assert {"model_id": MODEL, "kind": "embedding"} in info["models"]
    assert info["version"] == client.get("/api/version").json()["version"]


def test_batch_size_limit_is_max_inputs(tei):
    msg = tei_error(tei.post("/embed", json={"inputs": ["x"] * 5}), 422, "Validation")
    assert msg == "batch size 5 > maximum allowed batch size 4"
    assert embed(tei, inputs=["x"] * 4).shape == (4, 32)
    assert embed(tei, inputs=list(range(5, 10))).shape == (1, 32)  # one id list is one input
    for path, body in (("/embed_all", {"inputs": ["x"] * 5}), ("/tokenize", {"inputs": ["x"] * 5}),
                       ("/decode", {"ids": [[5]] * 5}),
                       ("/similarity", {"inputs": {"source_sentence": "x", "sentences": ["y"] * 4}})):
        assert tei_error(tei.post(path, json=body), 422, "Validation").startswith("batch size 5 > ")
    assert len(tei.post("/similarity", json={"inputs": {"source_sentence": "x", "sentences": ["y"] * 3}}).json()) == 3


@pytest.mark.parametrize("body, status, error_type", [
    ({"inputs": ""}, 400, "Empty"),
    ({"inputs": []}, 400, "Empty"),  # TEI reads [] as one empty id list
    ({"inputs": [[]]}, 400, "Empty"),
    ({"inputs": ["x", ""]}, 400, "Empty"),
    ({}, 422, "Validation"),
    ({"inputs": None}, 422, "Validation"),
    ({"inputs": 5}, 422, "Validation"),
    ({"inputs": ["x", 5]}, 422, "Validation"),
    ({"inputs": [["x"]]}, 422, "Validation"),
    ({"inputs": [1.5]}, 422, "Validation"),
    ({"inputs": [-1]}, 422, "Validation"),
    ({"inputs": "x", "normalize": "true"}, 422, "Validation"),
    ({"inputs": "x", "normalize": None}, 422, "Validation"),
    ({"inputs": "x", "truncate": "no"}, 422, "Validation"),
    ({"inputs": "x", "dimensions": "8"}, 422, "Validation"),
    ({"inputs": "x", "prompt_name": 3}, 422, "Validation"),
])
def test_invalid_embed_requests(client, body, status, error_type):
    message = tei_error(client.post("/embed", json=body), status, error_type)
    if error_type == "Empty":
        assert message == "Input validation error: `inputs` cannot be empty"


def test_body_limit_is_413_in_tei_shape(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", max_body_bytes=1024)
    big = json.dumps({"inputs": "x" * 2000}).encode()
    for path in ("/embed", "/"):
        r = c.post(path, content=big, headers={"content-type": "application/json"})
        assert "max_body_bytes=1024" in tei_error(r, 413, "Validation")
    streamed = c.post("/embed", content=iter([big[:800], big[800:]]), headers={"content-type": "application/json"})
    tei_error(streamed, 413, "Validation")
    assert c.post("/api/embed", content=big).json() == {"error": "request body too large: limit max_body_bytes=1024"}


def test_huge_id_arrays_stay_cheap(client):
    """A million token ids (truncated, as TEI does) and a million-element mixed array (refused) cost at most
    32 bytes of Python allocations per element: no per-element validation objects."""
    n = 1_000_000
    ids = json.dumps({"inputs": [1] * n}, separators=(",", ":")).encode()
    mixed = json.dumps({"inputs": ["x", 1] * (n // 2)}, separators=(",", ":")).encode()
    tracemalloc.start()
    try:
        peaks = []
        for body, status in ((ids, 200), (mixed, 422)):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            r = client.post("/embed", content=body, headers={"content-type": "application/json"})
            peaks.append((tracemalloc.get_traced_memory()[1] - before) / 1e6)
            assert r.status_code == status, r.text[:200]
    finally:
        tracemalloc.stop()
    print(f"\n[tei huge arrays] peaks +{peaks[0]:.1f} MB (1M ids), +{peaks[1]:.1f} MB (1M mixed)")
    assert max(peaks) < 32 * n / 1e6


def test_openapi_lists_the_tei_routes(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/embed", "/embed_all", "/embed_sparse", "/similarity", "/tokenize", "/decode", "/info"):
        assert path in paths
    assert "post" not in paths.get("/", {})
