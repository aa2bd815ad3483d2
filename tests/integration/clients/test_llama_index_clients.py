"""llama-index's OpenAILikeEmbedding / OpenAIEmbedding and OllamaEmbedding, default settings."""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytestmark = pytest.mark.clients

MODEL = "all-minilm-l6-v2"
OPENAI_ALIAS = "text-embedding-3-small"
TEXTS = ["LlamaIndex builds an index over documents.", "Nodes are embedded in batches.",
         "The query engine retrieves the top-k nodes."]


def test_openai_like_embedding(live_server, wire, long_texts, assert_matches):
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    emb = OpenAILikeEmbedding(model_name=MODEL, api_base=f"{live_server}/v1", api_key="x",
                              http_client=httpx.Client(event_hooks=wire.hooks))
    texts = TEXTS + long_texts[:1]
    documents = emb.get_text_embedding_batch(texts)
    query = emb.get_query_embedding(TEXTS[0])
    one = emb.get_text_embedding(TEXTS[1])
    sent = wire.bodies("/v1/embeddings")
    assert [body["input"] for body in sent] == [texts, [TEXTS[0]], [TEXTS[1]]]  # plain strings
    assert all(body["model"] == MODEL and body["encoding_format"] == "base64" for body in sent)
    assert_matches(documents, texts)
    assert_matches(query, TEXTS[:1])
    assert_matches(one, TEXTS[1:2])


def test_openai_like_embedding_batches_and_newlines(live_server, wire, assert_matches):
    """embed_batch_size splits the requests; llama-index replaces newlines by spaces (same vectors)."""
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    texts = [f"Paragraph {i}.\nIt continues on a second line." for i in range(7)]
    emb = OpenAILikeEmbedding(model_name=MODEL, api_base=f"{live_server}/v1", api_key="x", embed_batch_size=3,
                              http_client=httpx.Client(event_hooks=wire.hooks))
    documents = emb.get_text_embedding_batch(texts)
    assert [len(body["input"]) for body in wire.bodies("/v1/embeddings")] == [3, 3, 1]
    assert all("\n" not in s for body in wire.bodies("/v1/embeddings") for s in body["input"])
    assert_matches(documents, texts)


def test_openai_like_embedding_async_and_dimensions(live_server, wire, assert_matches):
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    emb = OpenAILikeEmbedding(model_name=MODEL, api_base=f"{live_server}/v1", api_key="x", dimensions=64,
                              async_http_client=httpx.AsyncClient(event_hooks=wire.async_hooks))

    async def run():
        return await emb.aget_text_embedding_batch(TEXTS), await emb.aget_query_embedding(TEXTS[2])

    documents, query = asyncio.run(run())
    assert all(body["dimensions"] == 64 for body in wire.bodies("/v1/embeddings"))
    assert_matches(documents, TEXTS, dimensions=64)
    assert_matches(query, TEXTS[2:], dimensions=64)


def test_openai_embedding_with_openai_model_name(alias_server, wire, assert_matches):
    """llama-index-embeddings-openai's own class, pointed at the server under an OpenAI model name."""
    from llama_index.embeddings.openai import OpenAIEmbedding

    emb = OpenAIEmbedding(model=OPENAI_ALIAS, api_base=f"{alias_server}/v1", api_key="x",
                          http_client=httpx.Client(event_hooks=wire.hooks))
    documents = emb.get_text_embedding_batch(TEXTS)
    query = emb.get_query_embedding(TEXTS[0])
    assert all(body["model"] == OPENAI_ALIAS for body in wire.bodies("/v1/embeddings"))
    assert_matches(documents, TEXTS, base=alias_server)
    assert_matches(query, TEXTS[:1], base=alias_server)


def test_openai_like_unknown_model_fails_fast(live_server):
    import openai
    from llama_index.embeddings.openai_like import OpenAILikeEmbedding

    emb = OpenAILikeEmbedding(model_name="no-such-model", api_base=f"{live_server}/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        emb.get_query_embedding("x")


def test_ollama_embedding(live_server, wire, long_texts, assert_matches):
    from llama_index.embeddings.ollama import OllamaEmbedding

    emb = OllamaEmbedding(model_name=MODEL, base_url=live_server, client_kwargs={"event_hooks": wire.hooks})
    texts = TEXTS + long_texts[1:2]
    documents = emb.get_text_embedding_batch(texts)
    query = emb.get_query_embedding(TEXTS[0])
    sent = wire.bodies("/api/embed")
    assert sent[0]["input"] == texts and sent[1]["input"] == TEXTS[0]
    assert sent[0]["options"] == {}  # ollama_additional_kwargs defaults to an empty dict
    assert_matches(documents, texts)
    assert_matches(query, TEXTS[:1])


def test_ollama_embedding_async_with_keep_alive(live_server, wire, assert_matches):
    from llama_index.embeddings.ollama import OllamaEmbedding

    emb = OllamaEmbedding(model_name=MODEL, base_url=live_server, keep_alive="5m", embed_batch_size=2,
                          ollama_additional_kwargs={"num_ctx": 256},
                          client_kwargs={"event_hooks": wire.async_hooks})

    async def run():
        return await emb.aget_text_embedding_batch(TEXTS), await emb.aget_query_embedding(TEXTS[1])

    documents, query = asyncio.run(run())
    sent = wire.bodies("/api/embed")
    assert [len(b["input"]) if isinstance(b["input"], list) else 1 for b in sent] == [2, 1, 1]
    assert all(b["keep_alive"] == "5m" and b["options"] == {"num_ctx": 256} for b in sent)
    assert_matches(documents, TEXTS)
    assert_matches(query, TEXTS[1:2])


def test_ollama_embedding_unknown_model(live_server):
    import ollama
    from llama_index.embeddings.ollama import OllamaEmbedding

    with pytest.raises(ollama.ResponseError) as info:
        OllamaEmbedding(model_name="no-such-model", base_url=live_server).get_query_embedding("x")
    assert info.value.status_code == 404
