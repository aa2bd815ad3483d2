"""langchain-openai's OpenAIEmbeddings and langchain-ollama's OllamaEmbeddings, default settings."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.integration.clients import tiktoken_cache

pytestmark = pytest.mark.clients

MODEL = "all-minilm-l6-v2"
OPENAI_ALIAS = "text-embedding-3-small"
TEXTS = ["LangChain splits documents into chunks.", "A vector store indexes embeddings.",
         "Retrieval finds the closest chunk to the query."]


def test_prefilled_tiktoken_cache_is_what_tiktoken_reads(tiktoken_offline, monkeypatch):
    """tiktoken finds cl100k_base under its own cache key and never tries to download it."""
    import tiktoken.load

    def no_download(blobpath):
        raise AssertionError(f"tiktoken tried to download {blobpath}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    assert (tiktoken_offline / tiktoken_cache.cache_key()).is_file()
    data = tiktoken.load.read_file_cached(tiktoken_cache.CL100K_URL, tiktoken_cache.CL100K_SHA256)
    assert data == tiktoken_cache.cl100k_blob()
    ranks = tiktoken.load.load_tiktoken_bpe(tiktoken_cache.CL100K_URL, expected_hash=tiktoken_cache.CL100K_SHA256)
    assert len(ranks) == 100256


def openai_embeddings(base: str, model: str, wire, **kwargs):
    from langchain_openai import OpenAIEmbeddings

    return OpenAIEmbeddings(model=model, base_url=f"{base}/v1", api_key="x",
                            http_client=httpx.Client(event_hooks=wire.hooks),
                            http_async_client=httpx.AsyncClient(event_hooks=wire.async_hooks), **kwargs)


def assert_token_arrays(sent: list, texts: list[str]) -> None:
    """The body held cl100k_base token arrays, one per text, that decode back to the texts."""
    import tiktoken

    enc = tiktoken.get_encoding("cl100k_base")
    inputs = [ids for body in sent for ids in body["input"]]
    assert all(isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids) for ids in inputs)
    assert inputs == [enc.encode_ordinary(t) for t in texts]
    assert [enc.decode(ids) for ids in inputs] == texts


def test_openai_embeddings_with_openai_model_name(alias_server, tiktoken_offline, wire, long_texts, assert_matches):
    """The usual RAG setup: model text-embedding-3-small (an alias here), long documents, tiktoken on."""
    emb = openai_embeddings(alias_server, OPENAI_ALIAS, wire)
    texts = TEXTS + long_texts
    vectors = emb.embed_documents(texts)
    sent = wire.bodies("/v1/embeddings")
    assert len(sent) == 1 and sent[0]["model"] == OPENAI_ALIAS
    assert sent[0]["encoding_format"] == "base64"  # langchain leaves the SDK's default
    assert_token_arrays(sent, texts)
    assert all(len(body_ids) > 2000 for body_ids in sent[0]["input"][3:])  # ~2,000 words: >> 256 tokens
    assert_matches(vectors, texts, base=alias_server)

    query = emb.embed_query(TEXTS[0])
    assert_token_arrays(wire.bodies("/v1/embeddings")[1:], TEXTS[:1])
    assert_matches(query, TEXTS[:1], base=alias_server)


def test_openai_embeddings_with_served_model_name(live_server, tiktoken_offline, wire, long_texts, assert_matches):
    """A model name tiktoken does not know falls back to cl100k_base: still token arrays."""
    emb = openai_embeddings(live_server, MODEL, wire)
    texts = [long_texts[0], TEXTS[1]]
    vectors = emb.embed_documents(texts)
    assert_token_arrays(wire.bodies("/v1/embeddings"), texts)
    assert_matches(vectors, texts)


def test_openai_embeddings_dimensions(alias_server, tiktoken_offline, wire, assert_matches):
    emb = openai_embeddings(alias_server, OPENAI_ALIAS, wire, dimensions=96)
    vectors = emb.embed_documents(TEXTS)
    assert wire.bodies("/v1/embeddings")[0]["dimensions"] == 96
    assert_matches(vectors, TEXTS, base=alias_server, dimensions=96)


def test_openai_embeddings_async(alias_server, tiktoken_offline, wire, long_texts, assert_matches):
    emb = openai_embeddings(alias_server, OPENAI_ALIAS, wire)
    texts = TEXTS + long_texts[1:]

    async def run():
        return await emb.aembed_documents(texts), await emb.aembed_query(TEXTS[2])

    documents, query = asyncio.run(run())
    assert_token_arrays(wire.bodies("/v1/embeddings"), texts + TEXTS[2:])
    assert_matches(documents, texts, base=alias_server)
    assert_matches(query, TEXTS[2:], base=alias_server)


def ollama_embeddings(base: str, wire, **kwargs):
    from langchain_ollama import OllamaEmbeddings

    return OllamaEmbeddings(model=MODEL, base_url=base, sync_client_kwargs={"event_hooks": wire.hooks},
                            async_client_kwargs={"event_hooks": wire.async_hooks}, **kwargs)


def test_ollama_embeddings(live_server, wire, long_texts, assert_matches):
    emb = ollama_embeddings(live_server, wire)
    texts = TEXTS + long_texts[:1]
    documents = emb.embed_documents(texts)
    query = emb.embed_query(TEXTS[0])
    sent = wire.bodies("/api/embed")
    assert len(sent) == 2 and sent[0]["input"] == texts and sent[1]["input"] == [TEXTS[0]]
    # langchain-ollama sends its whole option set, unset ones as null; the server ignores them.
    assert isinstance(sent[0]["options"], dict) and None in sent[0]["options"].values()
    assert "keep_alive" not in sent[0]
    assert_matches(documents, texts)
    assert_matches(query, TEXTS[:1])


def test_ollama_embeddings_integer_keep_alive_and_options(live_server, wire, assert_matches):
    emb = ollama_embeddings(live_server, wire, keep_alive=300, num_ctx=512, temperature=0.0)
    documents = emb.embed_documents(TEXTS)
    (sent,) = wire.bodies("/api/embed")
    assert sent["keep_alive"] == 300 and sent["options"]["num_ctx"] == 512
    assert_matches(documents, TEXTS)


def test_ollama_embeddings_async_and_dimensions(live_server, wire, assert_matches):
    emb = ollama_embeddings(live_server, wire, dimensions=48)

    async def run():
        return await emb.aembed_documents(TEXTS), await emb.aembed_query(TEXTS[1])

    documents, query = asyncio.run(run())
    assert all(body["dimensions"] == 48 for body in wire.bodies("/api/embed"))
    assert_matches(documents, TEXTS, dimensions=48)
    assert_matches(query, TEXTS[1:2], dimensions=48)


def test_ollama_embeddings_unknown_model(live_server):
    import ollama
    from langchain_ollama import OllamaEmbeddings

    with pytest.raises(ollama.ResponseError) as info:
        OllamaEmbeddings(model="no-such-model", base_url=live_server).embed_query("x")
    assert info.value.status_code == 404
