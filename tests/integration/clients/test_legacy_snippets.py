"""Backend code written against the two small services this server replaces, verbatim, with ``requests``.

A single-model Ollama-like service (POST /api/embed with no model, ``encoding_format``), and the MiniLM
FastAPI tutorial service (POST /embeddings ``{texts, normalize}``, key in ``X-API-Key``), live on loopback.
Every vector must be /api/embed's for the same text (cosine >= 0.9999); ``normalize: false`` gives the
pooled vector, whose L2 normalisation is /api/embed's.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests

from tests.integration.clients.conftest import reference_vectors
from tests.support.server import running_server

pytestmark = pytest.mark.clients

KEY = "sk-legacy-test"
TEXTS = ["什么是机器学习？", "Machine learning lets computers learn from data.", "Le ciel est bleu."]


@pytest.fixture(scope="module")
def keyed_server(empty_models_dir, tmp_path_factory):
    """A live server with ``EMBED_API_KEY`` set, as the tutorial service ran with its key."""
    log = tmp_path_factory.mktemp("logs") / "keyed-server.log"
    with running_server(empty_models_dir, env={"EMBED_API_KEY": KEY}, log_path=log) as (base, _proc):
        yield base


# ----- the single-model Ollama-like service ----------------------------------------------------------
def test_api_embed_without_model_float(live_server, assert_matches):
    BASE = live_server

    def get_embedding(text):
        resp = requests.post(f"{BASE}/api/embed", json={"input": text, "encoding_format": "float"})
        resp.raise_for_status()
        return resp.json()["embeddings"][0]

    vectors = [get_embedding(t) for t in TEXTS]
    assert all(len(v) == 384 for v in vectors)
    assert_matches(vectors, TEXTS)


def test_api_embed_without_model_batch_and_base64(live_server, assert_matches):
    BASE = live_server

    r = requests.post(f"{BASE}/api/embed", json={"input": TEXTS, "encoding_format": "base64"})
    embeddings = [np.frombuffer(base64.b64decode(e), dtype=np.float32) for e in r.json()["embeddings"]]

    assert r.status_code == 200 and r.json()["model"] == "all-minilm-l6-v2"
    assert_matches(embeddings, TEXTS)
    floats = requests.post(f"{BASE}/api/embed", json={"input": TEXTS}).json()["embeddings"]
    assert np.array_equal(np.asarray(embeddings), np.asarray(floats, dtype=np.float32))


# ----- the MiniLM FastAPI tutorial service ---------------------------------------------------------------
def test_embeddings_texts_with_x_api_key(keyed_server, assert_matches):
    BASE, API_KEY = keyed_server, KEY

    response = requests.post(
        f"{BASE}/embeddings",
        json={"texts": TEXTS, "normalize": True},
        headers={"X-API-Key": API_KEY},
    )
    response.raise_for_status()
    data = response.json()
    embeddings = data["embeddings"]
    summary = f"{data['count']} embeddings in {data['total_time_ms']:.1f} ms"

    assert data["count"] == len(embeddings) == 3 and summary.startswith("3 embeddings in ")
    assert np.allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert_matches(embeddings, TEXTS)


def test_embeddings_data_json_dumps_normalize_false(keyed_server, live_server, assert_matches):
    """``data=json.dumps(...)``: no content type on the wire; normalize false: the pooled vectors."""
    BASE, API_KEY = keyed_server, KEY

    payload = {"texts": TEXTS, "normalize": False}
    r = requests.post(BASE + "/embeddings", data=json.dumps(payload), headers={"X-API-Key": API_KEY})
    raw = np.array(r.json()["embeddings"])

    assert r.status_code == 200 and "content-type" not in {k.lower() for k in r.request.headers}
    norms = np.linalg.norm(raw, axis=1)
    assert not np.allclose(norms, 1.0, atol=1e-2)  # not normalised
    assert_matches(raw, TEXTS)  # the same direction
    reference = reference_vectors(live_server, TEXTS)
    assert np.allclose(raw / norms[:, None], reference, atol=1e-5)  # L2-normalised: /api/embed's vector
    assert np.allclose(raw, reference * norms[:, None], atol=1e-4)


def test_embeddings_errors_as_fastapi_detail(keyed_server):
    BASE, API_KEY = keyed_server, KEY

    r = requests.post(f"{BASE}/embeddings", json={"texts": [], "normalize": True}, headers={"X-API-Key": API_KEY})
    assert r.status_code == 400 and r.json() == {"detail": '"texts" must not be empty: send at least one text'}
    r = requests.post(f"{BASE}/embeddings", json={"texts": ["x"]}, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401 and "X-API-Key" in r.json()["detail"]
    with pytest.raises(requests.HTTPError):
        r.raise_for_status()


# ----- OpenAI-style clients whose base URL has no /v1 ------------------------------------------------------
def test_openai_body_on_embeddings(keyed_server, assert_matches):
    BASE, API_KEY = keyed_server, KEY

    r = requests.post(f"{BASE}/embeddings", json={"model": "all-minilm-l6-v2", "input": TEXTS},
                      headers={"Authorization": f"Bearer {API_KEY}"})
    vectors = [d["embedding"] for d in sorted(r.json()["data"], key=lambda d: d["index"])]

    assert r.status_code == 200 and r.json()["object"] == "list"
    assert_matches(vectors, TEXTS)


def test_openai_client_without_v1(keyed_server, assert_matches):
    from openai import OpenAI

    client = OpenAI(base_url=keyed_server, api_key=KEY, max_retries=0)
    response = client.embeddings.create(model="all-minilm-l6-v2", input=TEXTS)  # base64 on the wire, by default
    assert_matches([d.embedding for d in response.data], TEXTS)
