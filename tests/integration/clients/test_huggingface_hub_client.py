"""``huggingface_hub``'s ``InferenceClient`` (pinned in the ``test`` extra) against the live server's TEI API.

``InferenceClient(model="http://127.0.0.1:PORT")`` posts every task to the bare URL: ``feature_extraction`` sends
``{"inputs": ..., <its parameters at the top level>}`` (TEI's /embed body), ``sentence_similarity`` sends
``{"inputs": {"source_sentence", "sentences"}, "parameters": {}}``; POST / tells them apart by ``inputs``.
The server's default model is all-MiniLM-L6-v2 with e5-style prompts added (``minilm-prompted``); every vector
must equal /api/embed's for the same text on the embedded all-MiniLM-L6-v2 (the same weights).
"""

from __future__ import annotations

import asyncio
import json

import httpx2
import huggingface_hub
import numpy as np
import pytest
from huggingface_hub import AsyncInferenceClient, InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import _http

from tests.integration.clients.conftest import MIN_COSINE, cosines, reference_vectors
from tests.support.checkpoints import minilm_path
from tests.support.server import running_server

pytestmark = pytest.mark.clients

PINNED = "2.4.0"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Embeddings map text to vectors.",
         "Ein Satz auf Deutsch, mit Umlauten: äöü ß."]
PROMPTS = {"query": "query: ", "passage": "passage: "}
TAIL = "the cat sat on the mat " * 42 + "a dog"  # 254 single-token words: a full context with [CLS] and [SEP]


@pytest.fixture(scope="module")
def tei_server(tmp_path_factory):
    """A live server whose default model is all-MiniLM-L6-v2 (files linked) with prompts in its folder."""
    root = tmp_path_factory.mktemp("hf-models")
    folder = root / "minilm-prompted"
    folder.mkdir()
    for item in minilm_path().iterdir():
        if item.name != "config_sentence_transformers.json":
            (folder / item.name).symlink_to(item)
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"prompts": PROMPTS}))
    log = tmp_path_factory.mktemp("logs") / "hf-server.log"
    with running_server(root, model="minilm-prompted", log_path=log) as (base, _proc):
        yield base


@pytest.fixture(autouse=True)
def hub_online_for_loopback(monkeypatch):
    """Importing embedding_server sets HF_HUB_OFFLINE=1 in this process, and with it huggingface_hub refuses
    every request, a loopback one too (users who export it must unset it for the client process). The socket
    guard of conftest.py still refuses anything but loopback."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def wire_client(wire):
    """huggingface_hub's shared HTTP session, recording the bodies it sends (``wire``)."""
    _http.set_client_factory(lambda: httpx2.Client(event_hooks={"request": [_http.hf_request_event_hook, wire._record]},
                                                   follow_redirects=True, timeout=None))
    yield wire
    _http.set_client_factory(_http.default_client_factory)


def matches(got, base: str, texts: list[str]) -> np.ndarray:
    got = np.asarray(got, dtype=np.float64)
    want = reference_vectors(base, texts)
    assert got.shape == want.shape, (got.shape, want.shape)
    cos = cosines(got, want)
    assert cos.min() >= MIN_COSINE, cos
    return got


def test_pinned_version():
    assert huggingface_hub.__version__ == PINNED


def test_feature_extraction_posts_teis_embed_body_to_the_bare_url(tei_server, wire_client):
    got = InferenceClient(model=tei_server).feature_extraction(TEXTS)
    assert isinstance(got, np.ndarray) and got.dtype == np.float32 and got.shape == (3, 384)
    matches(got, tei_server, TEXTS)
    assert wire_client.requests == [("POST", "/", {"inputs": TEXTS})]
    one = InferenceClient(model=tei_server).feature_extraction(TEXTS[0])
    assert one.shape == (1, 384)
    matches(one, tei_server, TEXTS[:1])


@pytest.mark.parametrize("normalize", [True, False])
def test_normalize(tei_server, wire_client, normalize):
    got = matches(InferenceClient(model=tei_server).feature_extraction(TEXTS, normalize=normalize), tei_server, TEXTS)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) if normalize else norms.min() > 1.5
    assert wire_client.requests[-1][2] == {"inputs": TEXTS, "normalize": normalize}


def test_truncate_and_truncation_direction(tei_server, wire_client, long_texts):
    client = InferenceClient(model=tei_server)
    tokens = httpx2.post(f"{tei_server}/tokenize", json={"inputs": TAIL}).json()[0]
    assert len(tokens) == 256  # TAIL alone fills the context exactly
    text = long_texts[0] + " " + TAIL
    left = client.feature_extraction(text, truncate=True, truncation_direction="left")
    matches(left, tei_server, [TAIL])  # cut from the left: the tail is what is left
    right = client.feature_extraction(text, truncate=True, truncation_direction="right")
    matches(right, tei_server, [long_texts[0]])  # /api/embed cuts from the right
    assert wire_client.requests[-2][2] == {"inputs": text, "truncate": True, "truncation_direction": "left"}
    with pytest.raises(HfHubHTTPError) as refused:
        client.feature_extraction(text, truncate=False)
    assert refused.value.response.status_code == 422
    assert refused.value.response.json()["error_type"] == "Validation"


def test_prompt_name(tei_server, wire_client):
    client = InferenceClient(model=tei_server)
    got = client.feature_extraction(TEXTS, prompt_name="query")
    matches(got, tei_server, [PROMPTS["query"] + t for t in TEXTS])
    assert wire_client.requests[-1][2] == {"inputs": TEXTS, "prompt_name": "query"}
    raw = client.feature_extraction(TEXTS[:1], prompt_name="passage", normalize=False)
    matches(raw, tei_server, [PROMPTS["passage"] + TEXTS[0]])
    with pytest.raises(HfHubHTTPError) as refused:
        client.feature_extraction(TEXTS, prompt_name="nope")
    assert refused.value.response.status_code == 422 and "nope" in refused.value.response.json()["error"]


def test_dimensions(tei_server):
    got = InferenceClient(model=tei_server).feature_extraction(TEXTS, dimensions=64)
    full = reference_vectors(tei_server, TEXTS)
    assert got.shape == (3, 64)
    assert cosines(got, full[:, :64]).min() >= MIN_COSINE


def test_sentence_similarity(tei_server, wire_client):
    scores = InferenceClient(model=tei_server).sentence_similarity(TEXTS[0], other_sentences=TEXTS)
    vectors = reference_vectors(tei_server, TEXTS)
    assert isinstance(scores, list) and len(scores) == 3
    assert np.allclose(scores, vectors @ vectors[0], atol=1e-4) and scores[0] == pytest.approx(1.0, abs=1e-4)
    sent = {"inputs": {"source_sentence": TEXTS[0], "sentences": TEXTS}, "parameters": {}}
    assert wire_client.requests == [("POST", "/", sent)]


def test_async_client(tei_server):
    async def run():
        async with AsyncInferenceClient(model=tei_server) as client:
            return (await client.feature_extraction(TEXTS, normalize=False),
                    await client.sentence_similarity(TEXTS[0], other_sentences=TEXTS[1:]))

    vectors, scores = asyncio.run(run())
    matches(vectors, tei_server, TEXTS)
    want = reference_vectors(tei_server, TEXTS)
    assert np.allclose(scores, want[1:] @ want[0], atol=1e-4)
