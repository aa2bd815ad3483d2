"""llama-index's ``TextEmbeddingsInference`` (llama-index-embeddings-text-embeddings-inference, pinned in the ``test``
extra) against the live server's TEI API.

The client opens a fresh ``httpx.Client`` per call and posts ``{"inputs": [texts], "truncate": truncate_text}`` to
``{base_url}{endpoint}`` (``/embed``), with ``Authorization: Bearer <auth_token>`` when it has one. It never sends
``normalize`` (TEI's default, true, applies: unit vectors) nor the model name (TEI serves one model), and reads the
answer with ``response.json()`` without looking at the status. Its query/text instructions come from
llama-index-utils-huggingface: ``f"{instruction} {text}".strip()``, with a default query instruction for BGE model
names. Every vector must equal /api/embed's for the same text (cosine >= 0.9999).
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import httpx
import numpy as np
import pytest

from tests.integration.clients.conftest import API_KEY, M3_MODEL, MODEL, matching_vectors

pytestmark = pytest.mark.clients

PINNED = "0.6.0"
TEXTS = ["LlamaIndex builds an index over documents.", "Nodes are embedded in batches.",
         "The query engine retrieves the top-k nodes.", "Ein Satz auf Deutsch: äöü ß.", "Vectors 🚀 and\nnewlines.",
         "  Leading and trailing blanks are stripped by the client.  ", "short"]
BGE_QUERY = "Represent this question for searching relevant passages: "  # llama-index's default for BGE names


def tei(base: str, **kwargs):
    from llama_index.embeddings.text_embeddings_inference import TextEmbeddingsInference

    return TextEmbeddingsInference(**{"model_name": MODEL, "base_url": base, **kwargs})


def matches(got, base: str, texts: list[str], **reference) -> np.ndarray:
    return matching_vectors(got, base, texts, **reference)[0]


def test_pinned_version():
    assert version("llama-index-embeddings-text-embeddings-inference") == PINNED


def test_text_query_and_batch_embeddings(live_server, wire_httpx):
    emb = tei(live_server, embed_batch_size=3)
    one = emb.get_text_embedding(TEXTS[0])
    query = emb.get_query_embedding(TEXTS[1])
    batch = emb.get_text_embedding_batch(TEXTS)
    sent = [t.strip() for t in TEXTS]  # format_text/format_query strip the text
    assert wire_httpx.requests == [
        ("POST", "/embed", {"inputs": [TEXTS[0]], "truncate": True}),
        ("POST", "/embed", {"inputs": [TEXTS[1]], "truncate": True}),
        ("POST", "/embed", {"inputs": sent[0:3], "truncate": True}),
        ("POST", "/embed", {"inputs": sent[3:6], "truncate": True}),
        ("POST", "/embed", {"inputs": sent[6:], "truncate": True}),
    ]
    headers = wire_httpx.headers[0]
    assert headers["content-type"] == "application/json" and "authorization" not in headers
    matches(one, live_server, TEXTS[:1])
    matches(query, live_server, TEXTS[1:2])
    got = matches(batch, live_server, sent)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # no `normalize` sent: TEI's default, true


def test_async_variants(live_server, wire_httpx):
    emb = tei(live_server, embed_batch_size=2)
    emb.num_workers = 2  # a BaseEmbedding field this class's __init__ does not take

    async def run():
        return (await emb.aget_text_embedding(TEXTS[0]), await emb.aget_query_embedding(TEXTS[1]),
                await emb.aget_text_embedding_batch(TEXTS[:5]))

    one, query, batch = asyncio.run(run())
    bodies = wire_httpx.bodies("/embed")
    assert bodies[:2] == [{"inputs": [TEXTS[0]], "truncate": True}, {"inputs": [TEXTS[1]], "truncate": True}]
    assert sorted(len(b["inputs"]) for b in bodies[2:]) == [1, 2, 2]  # num_workers=2: batches run concurrently
    assert sorted(t for b in bodies[2:] for t in b["inputs"]) == sorted(TEXTS[:5])
    matches(one, live_server, TEXTS[:1])
    matches(query, live_server, TEXTS[1:2])
    matches(batch, live_server, TEXTS[:5])  # in the order asked, whatever order the batches came back in


def test_query_and_text_instructions(live_server, wire_httpx):
    emb = tei(live_server, query_instruction="query:", text_instruction="passage:")
    query = emb.get_query_embedding(TEXTS[0])
    texts = emb.get_text_embedding_batch(TEXTS[1:3])
    assert wire_httpx.bodies("/embed") == [{"inputs": [f"query: {TEXTS[0]}"], "truncate": True},
                                           {"inputs": [f"passage: {t}" for t in TEXTS[1:3]], "truncate": True}]
    matches(query, live_server, [f"query: {TEXTS[0]}"])
    matches(texts, live_server, [f"passage: {t}" for t in TEXTS[1:3]])


def test_bge_model_name_adds_a_query_instruction_but_is_not_sent(live_server, wire_httpx):
    """The model name only picks llama-index's default instructions (BGE's query prefix); the server's default model
    answers. An empty instruction turns the default off."""
    emb = tei(live_server, model_name="BAAI/bge-small-en-v1.5")  # "{instruction} {query}": two blanks, same vector
    query = emb.get_query_embedding(TEXTS[0])
    text = emb.get_text_embedding(TEXTS[1])
    plain = tei(live_server, model_name="BAAI/bge-small-en-v1.5", query_instruction="").get_query_embedding(TEXTS[0])
    assert wire_httpx.bodies("/embed") == [{"inputs": [f"{BGE_QUERY} {TEXTS[0]}"], "truncate": True},
                                           {"inputs": [TEXTS[1]], "truncate": True},
                                           {"inputs": [TEXTS[0]], "truncate": True}]
    matches(query, live_server, [f"{BGE_QUERY} {TEXTS[0]}"])
    matches(text, live_server, TEXTS[1:2])
    matches(plain, live_server, TEXTS[:1])


def test_truncate_text(live_server, wire_httpx, long_texts):
    """truncate_text=True (the default) cuts a long input from the right, as /api/embed does; False gets TEI's 422,
    which the client does not check: it indexes the error object and fails with a KeyError."""
    got = tei(live_server).get_text_embedding_batch(long_texts[:2])
    matches(got, live_server, long_texts[:2])
    with pytest.raises(KeyError):
        tei(live_server, truncate_text=False).get_text_embedding(long_texts[0])
    refused = wire_httpx.bodies("/embed")[-1]
    assert refused == {"inputs": [long_texts[0]], "truncate": False}
    answer = httpx.post(f"{live_server}/embed", json=refused)
    assert answer.status_code == 422 and answer.json()["error_type"] == "Validation"


def test_auth_token(m3_server, wire_httpx):
    """auth_token as a string or as a function of the base URL: ``Authorization: Bearer <token>``. Without it a keyed
    server answers 401, which the client, again, reads as a result (KeyError)."""
    key = {"Authorization": f"Bearer {API_KEY}"}
    seen = []

    def token(url: str) -> str:
        seen.append(url)
        return API_KEY

    one = tei(m3_server, model_name=M3_MODEL, auth_token=API_KEY).get_text_embedding(TEXTS[0])
    batch = tei(m3_server, model_name=M3_MODEL, auth_token=token).get_text_embedding_batch(TEXTS[:3])
    assert seen == [m3_server]
    assert [h["authorization"] for h in wire_httpx.headers] == [f"Bearer {API_KEY}"] * 2
    matches(one, m3_server, TEXTS[:1], model=M3_MODEL, headers=key)
    matches(batch, m3_server, TEXTS[:3], model=M3_MODEL, headers=key)

    async def run():
        return await tei(m3_server, model_name=M3_MODEL, auth_token=API_KEY).aget_query_embedding(TEXTS[2])

    matches(asyncio.run(run()), m3_server, TEXTS[2:3], model=M3_MODEL, headers=key)
    assert wire_httpx.headers[-1]["authorization"] == f"Bearer {API_KEY}"
    with pytest.raises(KeyError):
        tei(m3_server, model_name=M3_MODEL).get_text_embedding(TEXTS[0])
    assert "authorization" not in wire_httpx.headers[-1]
    assert httpx.post(f"{m3_server}/embed", json={"inputs": ["x"]}).status_code == 401
