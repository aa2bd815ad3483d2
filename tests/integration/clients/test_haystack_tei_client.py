"""Haystack's TEI embedders against the live server's TEI API.

Haystack 3 (haystack-ai) no longer ships the Hugging Face API components: they live in the
``huggingface-api-haystack`` integration (both pinned in the ``test`` extra), imported from
``haystack_integrations.components.embedders.huggingface_api``:

- ``HuggingFaceAPITextEmbedder`` / ``HuggingFaceAPIDocumentEmbedder`` with ``api_type="text_embeddings_inference"``
  and ``api_params={"url": ...}`` call huggingface_hub's ``InferenceClient(model=url).feature_extraction``, which
  posts ``{"inputs": ..., "truncate": ..., "normalize": ...}`` to the bare URL (``POST /``; a field set to None is
  left out). Their defaults are ``truncate=True`` and ``normalize=False``: out of the box they get the pooled
  vector before L2 normalisation.
- ``HuggingFaceTEISparseTextEmbedder`` / ``HuggingFaceTEISparseDocumentEmbedder`` post ``{"inputs": ...}`` to
  ``{api_base_url}/embed_sparse`` with plain httpx; checked on the tiny BGE-M3 fixture (a sparse head) against
  FlagEmbedding's recorded lexical weights.

Every dense vector must equal /api/embed's for the same text (cosine >= 0.9999), normalised or not.
"""

from __future__ import annotations

import asyncio
import json
import os
from importlib.metadata import version

os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"  # read when haystack is first imported (its posthog telemetry)

import httpx  # noqa: E402
import httpx2  # noqa: E402
import huggingface_hub  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from haystack import Document  # noqa: E402
from haystack.utils import Secret  # noqa: E402
from haystack_integrations.common.huggingface_api.utils import HFEmbeddingAPIType  # noqa: E402
from haystack_integrations.components.embedders.huggingface_api import (  # noqa: E402
    HuggingFaceAPIDocumentEmbedder, HuggingFaceAPITextEmbedder, HuggingFaceTEISparseDocumentEmbedder,
    HuggingFaceTEISparseTextEmbedder)
from huggingface_hub.errors import HfHubHTTPError  # noqa: E402
from huggingface_hub.utils import _http  # noqa: E402

from tests.integration.clients.conftest import API_KEY, FIXTURES, M3_MODEL, matching_vectors  # noqa: E402

pytestmark = pytest.mark.clients

PINNED = {"haystack-ai": "3.4.1", "huggingface-api-haystack": "3.1.0"}
TEI = "text_embeddings_inference"
TEXTS = ["Haystack pipelines embed documents before writing them.", "A retriever compares the query embedding.",
         "Ein Satz auf Deutsch: äöü ß.", "Vectors 🚀 and\nnewlines.", "  Blanks around are kept.  ", "short",
         "The document store keeps dense and sparse vectors."]
KEY = {"Authorization": f"Bearer {API_KEY}"}
M3_REFERENCE = json.loads((FIXTURES / "tiny-bge-m3.flagembedding.json").read_text())


@pytest.fixture(autouse=True)
def hub_online_for_loopback(monkeypatch, tmp_path):
    """Importing embedding_server sets HF_HUB_OFFLINE=1 in this process, and with it huggingface_hub refuses every
    request, a loopback one too. It also sets HF_HUB_DISABLE_TELEMETRY=1, kept here whatever the import order
    (see test_hub_user_agent_fetches_from_the_hub_unless_telemetry_is_off). No token from the environment or a
    token file: the embedders' default ``token`` reads HF_API_TOKEN/HF_TOKEN. The socket guard of conftest.py still
    refuses anything but loopback."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    for name in ("HF_TOKEN", "HF_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def hub_wire(wire):
    """huggingface_hub's HTTP sessions (sync and async), recording what they send (``wire``)."""
    _http.set_client_factory(lambda: httpx2.Client(
        event_hooks={"request": [_http.hf_request_event_hook, wire._record]}, follow_redirects=True, timeout=None))
    _http.set_async_client_factory(lambda: httpx2.AsyncClient(
        event_hooks={"request": [_http.async_hf_request_event_hook, wire._arecord],
                     "response": [_http.async_hf_response_event_hook]}, follow_redirects=True, timeout=None))
    yield wire
    _http.set_client_factory(_http.default_client_factory)
    _http.set_async_client_factory(_http.default_async_client_factory)


def matches(got, base: str, texts: list[str], normalized: bool, **reference) -> np.ndarray:
    """``got`` is /api/embed's vectors for ``texts``: equal once L2-normalised, and of unit norm or not as asked."""
    got, want = matching_vectors(got, base, texts, **reference)
    norms = np.linalg.norm(got, axis=1)
    assert np.allclose(got / norms[:, None], want, atol=1e-4)
    if normalized:
        assert np.allclose(norms, 1.0, atol=1e-5), norms
    else:
        assert np.abs(norms - 1.0).min() > 0.05, norms  # the pooled vector, not a unit one
    return got


def text_embedder(base: str, **kwargs) -> HuggingFaceAPITextEmbedder:
    return HuggingFaceAPITextEmbedder(api_type=TEI, api_params={"url": base}, **kwargs)


def document_embedder(base: str, **kwargs) -> HuggingFaceAPIDocumentEmbedder:
    return HuggingFaceAPIDocumentEmbedder(api_type=TEI, api_params={"url": base}, progress_bar=False, **kwargs)


def test_pinned_versions():
    assert {name: version(name) for name in PINNED} == PINNED


def test_text_embedder_defaults_get_the_pooled_vector(live_server, hub_wire):
    result = text_embedder(live_server).run(text=TEXTS[0])
    assert list(result) == ["embedding"] and isinstance(result["embedding"], list)
    matches(result["embedding"], live_server, TEXTS[:1], normalized=False)
    assert hub_wire.requests == [("POST", "/", {"inputs": TEXTS[0], "truncate": True, "normalize": False})]
    headers = hub_wire.headers[0]
    assert headers["content-type"] == "application/json" and "authorization" not in headers


@pytest.mark.parametrize("normalize", [True, False, None])
def test_text_embedder_normalize(live_server, hub_wire, normalize):
    """normalize=None leaves the field out: TEI's default, true. The enum works as the string does."""
    embedder = HuggingFaceAPITextEmbedder(api_type=HFEmbeddingAPIType.TEXT_EMBEDDINGS_INFERENCE,
                                          api_params={"url": live_server}, normalize=normalize)
    got = embedder.run(text=TEXTS[2])["embedding"]
    matches(got, live_server, TEXTS[2:3], normalized=normalize is not False)
    sent = {"inputs": TEXTS[2], "truncate": True, **({} if normalize is None else {"normalize": normalize})}
    assert hub_wire.bodies("/") == [sent]


def test_text_embedder_prefix_and_suffix(live_server, hub_wire):
    got = text_embedder(live_server, prefix="query: ", suffix=" (end)", normalize=True).run(text=TEXTS[4])["embedding"]
    sent = f"query: {TEXTS[4]} (end)"  # the text is sent as is, blanks and all
    assert hub_wire.bodies("/") == [{"inputs": sent, "truncate": True, "normalize": True}]
    matches(got, live_server, [sent], normalized=True)


def test_text_embedder_truncate(live_server, hub_wire, long_texts):
    """truncate=True cuts from the right as /api/embed does; None leaves it to the server (EMBED_AUTO_TRUNCATE, on);
    False gets TEI's 422."""
    cut = text_embedder(live_server).run(text=long_texts[0])["embedding"]
    matches(cut, live_server, long_texts[:1], normalized=False)
    auto = text_embedder(live_server, truncate=None, normalize=None).run(text=long_texts[1])["embedding"]
    matches(auto, live_server, long_texts[1:2], normalized=True)
    with pytest.raises(HfHubHTTPError) as refused:
        text_embedder(live_server, truncate=False).run(text=long_texts[0])
    assert refused.value.response.status_code == 422
    assert refused.value.response.json()["error_type"] == "Validation"
    assert hub_wire.bodies("/") == [{"inputs": long_texts[0], "truncate": True, "normalize": False},
                                    {"inputs": long_texts[1]},
                                    {"inputs": long_texts[0], "truncate": False, "normalize": False}]


@pytest.mark.parametrize("normalize", [False, True])
def test_document_embedder_batches_meta_and_prefix(live_server, hub_wire, normalize):
    documents = [Document(content=text, meta={"title": f"Title {i}", "n": i}) for i, text in enumerate(TEXTS)]
    embedder = document_embedder(live_server, batch_size=3, prefix="passage: ", normalize=normalize,
                                 meta_fields_to_embed=["title", "missing"], embedding_separator=" | ")
    result = embedder.run(documents=documents)
    out = result["documents"]
    assert [d.content for d in out] == TEXTS and [d.meta for d in out] == [d.meta for d in documents]
    assert all(d.embedding is None for d in documents)  # the embedder returns copies
    sent = [f"passage: Title {i} | {text}" for i, text in enumerate(TEXTS)]
    assert hub_wire.requests == [("POST", "/", {"inputs": sent[i:i + 3], "truncate": True, "normalize": normalize})
                                 for i in (0, 3, 6)]
    matches([d.embedding for d in out], live_server, sent, normalized=normalize)


def test_document_embedder_defaults(live_server, hub_wire):
    documents = [Document(content=text) for text in TEXTS[:3]]
    out = document_embedder(live_server).run(documents=documents)["documents"]
    assert hub_wire.bodies("/") == [{"inputs": TEXTS[:3], "truncate": True, "normalize": False}]
    matches([d.embedding for d in out], live_server, TEXTS[:3], normalized=False)


def test_async_embedders(live_server, hub_wire):
    documents = [Document(content=text) for text in TEXTS]

    async def run():
        text = text_embedder(live_server, normalize=True)
        docs = document_embedder(live_server, batch_size=2, concurrency_limit=2)
        try:
            return (await text.run_async(text=TEXTS[1]))["embedding"], (await docs.run_async(documents=documents))
        finally:
            await text.close_async()
            await docs.close_async()

    query, result = asyncio.run(run())
    matches(query, live_server, TEXTS[1:2], normalized=True)
    matches([d.embedding for d in result["documents"]], live_server, TEXTS, normalized=False)  # in order
    bodies = hub_wire.bodies("/")
    assert bodies[0] == {"inputs": TEXTS[1], "truncate": True, "normalize": True}
    assert sorted(len(b["inputs"]) for b in bodies[1:]) == [1, 2, 2, 2]
    assert all(b["truncate"] is True and b["normalize"] is False for b in bodies[1:])


def test_token(m3_server, hub_wire, monkeypatch):
    """``token`` (a Secret, HF_TOKEN by default) is sent as ``Authorization: Bearer``; without one a keyed server
    answers TEI's 401."""
    got = text_embedder(m3_server, token=Secret.from_token(API_KEY)).run(text=TEXTS[0])["embedding"]
    matches(got, m3_server, TEXTS[:1], normalized=False, model=M3_MODEL, headers=KEY)
    monkeypatch.setenv("HF_TOKEN", API_KEY)
    documents = [Document(content=text) for text in TEXTS[:3]]
    out = HuggingFaceAPIDocumentEmbedder(api_type=TEI, api_params={"url": m3_server}, progress_bar=False,
                                         normalize=True).run(documents=documents)["documents"]
    matches([d.embedding for d in out], m3_server, TEXTS[:3], normalized=True, model=M3_MODEL, headers=KEY)
    assert [h["authorization"] for h in hub_wire.headers] == [f"Bearer {API_KEY}"] * 2
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HfHubHTTPError) as refused:
        text_embedder(m3_server).run(text=TEXTS[0])
    assert refused.value.response.status_code == 401 and "authorization" not in hub_wire.headers[-1]


def check_sparse(got, texts: list[str]) -> None:
    """Sparse embeddings equal FlagEmbedding's lexical weights for the tiny BGE-M3 (within 1e-5)."""
    assert len(got) == len(texts)
    for embedding, text in zip(got, texts):
        want = M3_REFERENCE["sparse"][M3_REFERENCE["texts"].index(text)]
        assert {str(i) for i in embedding.indices} == set(want) and len(embedding.indices) == len(want)
        assert all(abs(v - want[str(i)]) <= 1e-5 for i, v in zip(embedding.indices, embedding.values))


def test_sparse_text_embedder(m3_server, wire_httpx):
    texts = M3_REFERENCE["texts"]
    embedder = HuggingFaceTEISparseTextEmbedder(api_base_url=m3_server, token=Secret.from_token(API_KEY))
    got = [embedder.run(text=text)["sparse_embedding"] for text in texts[:2]]
    check_sparse(got, texts[:2])
    assert wire_httpx.requests == [("POST", "/embed_sparse", {"inputs": text}) for text in texts[:2]]
    assert wire_httpx.headers[0]["authorization"] == f"Bearer {API_KEY}"
    by_header = HuggingFaceTEISparseTextEmbedder(api_base_url=f"{m3_server}/", headers={"X-API-Key": API_KEY})
    check_sparse([by_header.run(text=texts[2])["sparse_embedding"]], texts[2:3])

    async def run():
        return (await embedder.run_async(text=texts[3]))["sparse_embedding"]

    check_sparse([asyncio.run(run())], texts[3:4])
    assert wire_httpx.requests[-1] == ("POST", "/embed_sparse", {"inputs": texts[3]})
    with pytest.raises(httpx.HTTPStatusError) as refused:
        HuggingFaceTEISparseTextEmbedder(api_base_url=m3_server).run(text=texts[0])
    assert refused.value.response.status_code == 401


def test_sparse_document_embedder(m3_server, wire_httpx):
    """Batches of ``batch_size`` to /embed_sparse, sync and async; the long text is cut to the context (TEI's
    auto-truncate), as FlagEmbedding cut it (max_length 64)."""
    texts = M3_REFERENCE["texts"]
    documents = [Document(content=text) for text in texts]
    embedder = HuggingFaceTEISparseDocumentEmbedder(api_base_url=m3_server, token=Secret.from_token(API_KEY),
                                                    batch_size=3, progress_bar=False, concurrency_limit=2)
    out = embedder.run(documents=documents)["documents"]
    check_sparse([d.sparse_embedding for d in out], texts)
    assert wire_httpx.bodies("/embed_sparse") == [{"inputs": texts[i:i + 3]} for i in range(0, len(texts), 3)]

    async def run():
        return (await embedder.run_async(documents=documents))["documents"]

    check_sparse([d.sparse_embedding for d in asyncio.run(run())], texts)


def test_sparse_embedder_on_a_model_without_a_sparse_head(live_server):
    with pytest.raises(httpx.HTTPStatusError) as refused:
        HuggingFaceTEISparseTextEmbedder(api_base_url=live_server).run(text=TEXTS[0])
    assert refused.value.response.status_code == 424
    assert refused.value.response.json() == {"error": "Backend error: Model is not an embedding model with SPLADE "
                                                      "pooling", "error_type": "Backend"}


def test_hub_user_agent_fetches_from_the_hub_unless_telemetry_is_off(live_server, hub_wire, monkeypatch, tmp_path):
    """huggingface_hub 2.4.0 builds its User-Agent with ``detect_agent()``, which GETs {HF endpoint}/api/agent-harnesses
    once a process (3 s timeout, failures swallowed, cached a day in ~/.cache/huggingface) unless
    HF_HUB_DISABLE_TELEMETRY (or DO_NOT_TRACK) is set: an air-gapped client process should set it, as it must unset
    HF_HUB_OFFLINE. Here the socket guard refuses that request and the embedding still works."""
    from huggingface_hub.utils import _detect_agent

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_TELEMETRY", False)
    monkeypatch.setattr(huggingface_hub.constants, "AGENT_HARNESSES_PATH", str(tmp_path / "harnesses.json"))
    monkeypatch.setattr(_detect_agent, "_registry", None)
    got = text_embedder(live_server, normalize=True).run(text=TEXTS[0])["embedding"]
    matches(got, live_server, TEXTS[:1], normalized=True)
    assert [(method, path) for method, path, _ in hub_wire.requests] == [("GET", "/api/agent-harnesses"), ("POST", "/")]
    assert hub_wire.headers[0]["host"] == "huggingface.co"
