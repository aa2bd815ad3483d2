"""The official ``ollama`` Python client, default settings, against the live server."""

from __future__ import annotations

import asyncio
from datetime import datetime

import numpy as np
import ollama
import pytest

pytestmark = pytest.mark.clients

MODEL = "all-minilm-l6-v2"
TEXTS = ["Why is the sky blue?", "Rayleigh scattering of sunlight.", "Le ciel est bleu à cause de la diffusion."]


def make_client(base: str, **kwargs) -> ollama.Client:
    return ollama.Client(host=base, **kwargs)


def test_embed_single_string(live_server, wire, assert_matches):
    response = make_client(live_server, event_hooks=wire.hooks).embed(model=MODEL, input=TEXTS[0])
    (sent,) = wire.bodies("/api/embed")
    assert sent == {"model": MODEL, "input": TEXTS[0]}  # the client drops every unset field
    assert response.model == MODEL
    assert len(response.embeddings) == 1 and len(response.embeddings[0]) == 384
    assert response.prompt_eval_count and response.prompt_eval_count > 0
    assert response.total_duration and response.total_duration > 0
    assert_matches(response.embeddings, TEXTS[:1])


def test_embed_list(live_server, assert_matches):
    response = make_client(live_server).embed(model=MODEL, input=TEXTS)
    assert len(response.embeddings) == 3
    assert np.allclose(np.linalg.norm(response.embeddings, axis=1), 1.0, atol=1e-5)
    assert_matches(response.embeddings, TEXTS)


def test_embed_with_tag_and_options(live_server, assert_matches):
    """``name:latest`` (as /api/tags lists it), options and keep_alive are accepted."""
    response = make_client(live_server).embed(model=f"{MODEL}:latest", input=TEXTS,
                                              options={"num_ctx": 512, "temperature": 0}, keep_alive="5m")
    assert_matches(response.embeddings, TEXTS)


def test_embed_truncate(live_server, long_texts, assert_matches):
    client = make_client(live_server)
    default = client.embed(model=MODEL, input=long_texts)
    explicit = client.embed(model=MODEL, input=long_texts, truncate=True)
    assert np.allclose(default.embeddings, explicit.embeddings, atol=1e-6)
    assert default.prompt_eval_count == 3 * 256  # each input cut to the model's 256-token context
    assert_matches(explicit.embeddings, long_texts)
    with pytest.raises(ollama.ResponseError) as info:
        client.embed(model=MODEL, input=long_texts[0], truncate=False)
    assert info.value.status_code == 400
    assert info.value.error and "{" not in info.value.error  # Ollama's {"error": "..."} shape, parsed
    short = client.embed(model=MODEL, input=TEXTS, truncate=False)
    assert_matches(short.embeddings, TEXTS)


def test_embed_dimensions(live_server, assert_matches):
    client = make_client(live_server)
    response = client.embed(model=MODEL, input=TEXTS, dimensions=128)
    got = np.asarray(response.embeddings)
    assert got.shape == (3, 128)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    full = np.asarray(client.embed(model=MODEL, input=TEXTS).embeddings)
    assert np.allclose(got, full[:, :128] / np.linalg.norm(full[:, :128], axis=1, keepdims=True), atol=1e-5)
    assert_matches(got, TEXTS, dimensions=128)


def test_legacy_embeddings(live_server, assert_matches):
    response = make_client(live_server).embeddings(model=MODEL, prompt=TEXTS[1])
    assert len(response.embedding) == 384
    assert_matches(response.embedding, TEXTS[1:2])


def test_list(live_server):
    models = make_client(live_server).list().models
    names = [m.model for m in models]
    assert f"{MODEL}:latest" in names
    entry = models[names.index(f"{MODEL}:latest")]
    assert isinstance(entry.modified_at, datetime)
    assert entry.size and entry.size > 0 and entry.digest
    assert entry.details and entry.details.family == "bert" and entry.details.format


def test_show(live_server):
    info = make_client(live_server).show(MODEL)
    assert info.capabilities == ["embedding"]
    assert info.details and info.details.family == "bert"
    assert info.modelinfo["general.architecture"] == "bert"
    assert info.modelinfo["bert.embedding_length"] == 384
    assert info.modelinfo["bert.context_length"] == 256
    assert isinstance(info.modified_at, datetime)


def test_ps(live_server):
    make_client(live_server).embed(model=MODEL, input="warm")
    models = make_client(live_server).ps().models
    loaded = [m for m in models if m.model == f"{MODEL}:latest"]
    assert len(loaded) == 1
    assert loaded[0].context_length == 256
    assert isinstance(loaded[0].expires_at, datetime)
    assert loaded[0].size and loaded[0].size > 0


def test_unknown_model_is_404(live_server):
    client = make_client(live_server)
    for call in (lambda: client.embed(model="no-such-model", input="x"),
                 lambda: client.embeddings(model="no-such-model", prompt="x"),
                 lambda: client.show("no-such-model")):
        with pytest.raises(ollama.ResponseError) as info:
            call()
        assert info.value.status_code == 404
        assert "no-such-model" in info.value.error


def test_async_client(live_server, wire, assert_matches):
    async def run():
        client = ollama.AsyncClient(host=live_server, event_hooks=wire.async_hooks)
        singles = await asyncio.gather(*(client.embed(model=MODEL, input=t) for t in TEXTS))
        batch = await client.embed(model=MODEL, input=TEXTS, dimensions=32)
        legacy = await client.embeddings(model=MODEL, prompt=TEXTS[0])
        listed, shown, loaded = await client.list(), await client.show(MODEL), await client.ps()
        with pytest.raises(ollama.ResponseError) as info:
            await client.embed(model="no-such-model", input="x")
        return singles, batch, legacy, listed, shown, loaded, info.value.status_code

    singles, batch, legacy, listed, shown, loaded, status = asyncio.run(run())
    assert len(wire.bodies("/api/embed")) == 5
    assert_matches([r.embeddings[0] for r in singles], TEXTS)
    assert_matches(batch.embeddings, TEXTS, dimensions=32)
    assert_matches(legacy.embedding, TEXTS[:1])
    assert f"{MODEL}:latest" in [m.model for m in listed.models]
    assert shown.capabilities == ["embedding"]
    assert f"{MODEL}:latest" in [m.model for m in loaded.models]
    assert status == 404
