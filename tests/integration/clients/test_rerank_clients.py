"""Rerank clients (pinned in the ``test`` extra) against a live server holding a tiny BERT cross-encoder.

- ``cohere`` (the SDK): ``ClientV2(base_url=...).rerank`` posts ``{model, query, documents, top_n}`` to
  ``{base_url}/v2/rerank``; the v1 ``Client`` still ships and posts ``{model, query, documents, top_n,
  return_documents}`` to ``/v1/rerank``. Both send ``Authorization: Bearer <api_key>`` and leave None fields out.
- ``llama-index-postprocessor-tei-rerank``: ``TextEmbeddingInference`` (sic) posts ``{query, texts}`` to
  ``{base_url}/rerank`` (TEI's body: no model, no truncate, no top_n: it sorts and cuts itself), reads the answer
  without looking at the status, and sends ``auth_token`` verbatim as the Authorization header (so "Bearer <key>").
- ``langchain-cohere``'s ``CohereRerank`` (the Cohere integration here): it takes a ``base_url``, or a ready
  ``cohere.ClientV2`` as ``client`` (whose posts can then be recorded), and calls ``ClientV2.rerank`` (``/v2/rerank``)
  with ``max_tokens_per_doc=None`` spelled out, which goes out as null. llama-index's Cohere postprocessor only
  takes a base_url (its client is private) and retries 5xx answers ten times, 4-10 s apart.

cohere is 5.21.1, not 7.x: langchain-cohere 0.6.0 needs cohere<6 (llama-index's Cohere postprocessor <7, and
cohere 6 would pull pydantic-core, hence pydantic, below the installed versions).

The server demands an API key (``EMBED_API_KEY``: the Cohere SDK always sends one). Its models folder holds only the
reranker, so the embedded MiniLM stays the default model and TEI's model-less /rerank uses the only reranker. Every
client must return CrossEncoder.predict's order (best first) and scores (sigmoid), to 1e-5.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version

import cohere
import httpx
import numpy as np
import pytest

from tests.integration.clients.conftest import API_KEY, MODEL
from tests.support.checkpoints import make_tiny_cross_encoder
from tests.support.server import running_server

pytestmark = pytest.mark.clients

PINNED = {"cohere": "5.21.1", "langchain-cohere": "0.6.0", "llama-index-postprocessor-tei-rerank": "0.6.0"}
RERANKER = "tiny-reranker"
QUERY = "what do embedding models map"
DOCS = ["embedding models map sentences to dense vectors", "the quick brown fox", "air gapped networks " * 60,
        "vector search engines rank documents by cosine similarity", "Ein Satz auf Deutsch: äöü ß.",
        "rerankers 🚀 score\nquery and document together", "ollama and openai clients send json"]
TOP_N = 3
KEY = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def reranker_dir(tmp_path_factory):
    """Generated once: the tokenizer's training is not deterministic, so server and reference share this folder."""
    root = tmp_path_factory.mktemp("rerank-client-models")
    make_tiny_cross_encoder(root / RERANKER, "bert")
    return root


@pytest.fixture(scope="module")
def reference(reranker_dir) -> np.ndarray:
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(reranker_dir / RERANKER), device="cpu").predict([(QUERY, d) for d in DOCS])


@pytest.fixture(scope="module")
def rerank_server(reranker_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "rerank-server.log"
    with running_server(reranker_dir, env={"EMBED_API_KEY": API_KEY}, log_path=log) as (base, _proc):
        yield base


def assert_ranked(got: list[tuple[int, float]], reference: np.ndarray, top_n: int | None = None) -> None:
    """``got``: (index into DOCS, score) pairs in the client's order: each score is CrossEncoder's for that document,
    the order is by descending score, and they are CrossEncoder's best ``top_n`` (all documents without it). Two
    documents whose scores are within the tolerance may come in either order."""
    tolerance = 1e-5
    indices = [i for i, _ in got]
    assert len(indices) == len(set(indices)) == min(top_n or len(reference), len(reference)), got
    assert max(abs(s - float(reference[i])) for i, s in got) <= tolerance, (got, reference)
    assert all(reference[a] >= reference[b] - tolerance for a, b in zip(indices, indices[1:])), (got, reference)
    left_out = [float(reference[i]) for i in range(len(reference)) if i not in indices]
    assert not left_out or max(left_out) <= float(reference[indices[-1]]) + tolerance, (got, reference)


def test_pinned_versions():
    assert {name: version(name) for name in PINNED} == PINNED


def test_server_serves_the_reranker_beside_the_default_model(rerank_server, reference):
    assert np.ptp(reference) > 1e-3  # scores that differ: the order is meaningful
    ids = [m["id"] for m in httpx.get(f"{rerank_server}/v1/models", headers=KEY).json()["data"]]
    assert RERANKER in ids and MODEL in ids
    r = httpx.post(f"{rerank_server}/api/embed", json={"input": "x"}, headers=KEY)  # no model: the default
    assert r.status_code == 200 and r.json()["model"] == MODEL


def test_cohere_client_v2(rerank_server, reference, wire):
    co = cohere.ClientV2(api_key=API_KEY, base_url=rerank_server, httpx_client=httpx.Client(event_hooks=wire.hooks))
    r = co.rerank(model=RERANKER, query=QUERY, documents=DOCS, top_n=TOP_N)
    assert wire.requests == [("POST", "/v2/rerank", {"model": RERANKER, "query": QUERY, "documents": DOCS,
                                                    "top_n": TOP_N})]
    assert wire.headers[0]["authorization"] == f"Bearer {API_KEY}"
    assert_ranked([(x.index, x.relevance_score) for x in r.results], reference, TOP_N)
    assert all(getattr(x, "document", None) is None for x in r.results)  # /v2/rerank: not echoed by default
    assert r.id and r.meta.api_version.version == "2" and r.meta.billed_units.search_units == 1


def test_cohere_v1_client(rerank_server, reference, wire):
    co = cohere.Client(api_key=API_KEY, base_url=rerank_server, httpx_client=httpx.Client(event_hooks=wire.hooks))
    r = co.rerank(model=RERANKER, query=QUERY, documents=DOCS, top_n=TOP_N)
    assert_ranked([(x.index, x.relevance_score) for x in r.results], reference, TOP_N)
    assert [x.document.text for x in r.results] == [DOCS[x.index] for x in r.results]  # echoed on /v1
    objects = co.rerank(model=RERANKER, query=QUERY, documents=[{"text": d} for d in DOCS], return_documents=False)
    assert_ranked([(x.index, x.relevance_score) for x in objects.results], reference)
    assert all(x.document is None for x in objects.results)
    assert wire.requests == [
        ("POST", "/v1/rerank", {"model": RERANKER, "query": QUERY, "documents": DOCS, "top_n": TOP_N}),
        ("POST", "/v1/rerank", {"model": RERANKER, "query": QUERY, "documents": [{"text": d} for d in DOCS],
                                "return_documents": False})]
    assert r.meta.api_version.version == "1"


def test_cohere_async_client_v2(rerank_server, reference):
    async def run():
        return await cohere.AsyncClientV2(api_key=API_KEY, base_url=rerank_server).rerank(
            model=RERANKER, query=QUERY, documents=DOCS)

    assert_ranked([(x.index, x.relevance_score) for x in asyncio.run(run()).results], reference)


def test_cohere_errors_are_the_sdk_exceptions(rerank_server):
    """A wrong key is 401 (UnauthorizedError), an unknown model 404 (NotFoundError), an embedding model 400."""
    bad = cohere.ClientV2(api_key="wrong", base_url=rerank_server)
    with pytest.raises(cohere.UnauthorizedError) as e:
        bad.rerank(model=RERANKER, query=QUERY, documents=DOCS)
    assert e.value.body["error"]["code"] == "invalid_api_key"
    co = cohere.ClientV2(api_key=API_KEY, base_url=rerank_server)
    with pytest.raises(cohere.NotFoundError):
        co.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS)
    with pytest.raises(cohere.BadRequestError) as e:
        co.rerank(model=MODEL, query=QUERY, documents=DOCS)
    assert "not a reranker" in e.value.body["error"]["message"]


def test_llama_index_tei_rerank(rerank_server, reference, wire_httpx):
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i)), score=0.01 * i) for i, d in enumerate(DOCS)]
    rerank = TextEmbeddingInference(base_url=rerank_server, top_n=TOP_N, auth_token=f"Bearer {API_KEY}")
    out = rerank.postprocess_nodes(nodes, query_str=QUERY)
    assert wire_httpx.requests == [("POST", "/rerank", {"query": QUERY, "texts": DOCS})]
    assert wire_httpx.headers[0]["authorization"] == f"Bearer {API_KEY}"
    assert_ranked([(int(n.node.id_), n.score) for n in out], reference, TOP_N)
    assert [n.node.text for n in out] == [DOCS[int(n.node.id_)] for n in out]


def test_llama_index_tei_rerank_bare_key_is_refused(rerank_server):
    """auth_token goes out verbatim: a bare key is no ``Bearer`` credential, the server answers 401, and the client,
    which reads the error object as the scores, fails its own length check."""
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    nodes = [NodeWithScore(node=TextNode(text=d)) for d in DOCS]
    with pytest.raises(AssertionError):
        TextEmbeddingInference(base_url=rerank_server, auth_token=API_KEY).postprocess_nodes(nodes, query_str=QUERY)
    r = httpx.post(f"{rerank_server}/rerank", json={"query": QUERY, "texts": DOCS}, headers={"Authorization": API_KEY})
    assert r.status_code == 401


def test_langchain_cohere_rerank(rerank_server, reference, wire):
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    client = cohere.ClientV2(api_key=API_KEY, base_url=rerank_server, httpx_client=httpx.Client(event_hooks=wire.hooks))
    docs = [Document(page_content=d, metadata={"i": i}) for i, d in enumerate(DOCS)]
    out = CohereRerank(client=client, model=RERANKER, top_n=TOP_N).compress_documents(docs, QUERY)
    assert wire.requests == [("POST", "/v2/rerank", {"model": RERANKER, "query": QUERY, "documents": DOCS,
                                                    "top_n": TOP_N, "max_tokens_per_doc": None})]
    assert_ranked([(d.metadata["i"], d.metadata["relevance_score"]) for d in out], reference, TOP_N)
    assert [d.page_content for d in out] == [DOCS[d.metadata["i"]] for d in out]
    # base_url instead of a client: the integration builds its own ClientV2; top_n=None asks for every document
    ranks = CohereRerank(base_url=rerank_server, cohere_api_key=API_KEY, model=RERANKER).rerank(DOCS, QUERY,
                                                                                                top_n=None)
    assert_ranked([(x["index"], x["relevance_score"]) for x in ranks], reference)
