"""The official ``openai`` Python SDK, default settings, against the live server."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import openai
import pytest

pytestmark = pytest.mark.clients

MODEL = "all-minilm-l6-v2"
TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "Embeddings map text to vectors.",
         "Ein Satz auf Deutsch, mit Umlauten: äöü ß."]


def make_client(base: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", **kwargs)


def test_defaults_request_base64_and_decode_it(live_server, wire, assert_matches):
    """With no encoding_format the SDK asks for base64 and decodes it to floats itself."""
    client = make_client(live_server, http_client=openai.DefaultHttpxClient(event_hooks=wire.hooks))
    result = client.embeddings.create(model=MODEL, input=TEXTS)
    (sent,) = wire.bodies("/v1/embeddings")
    assert sent["encoding_format"] == "base64" and sent["input"] == TEXTS
    assert [d.index for d in result.data] == [0, 1, 2]
    assert all(isinstance(d.embedding, list) and isinstance(d.embedding[0], float) for d in result.data)
    assert result.model == MODEL and result.usage.prompt_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens
    assert_matches([d.embedding for d in result.data], TEXTS)


def test_raw_response_really_is_base64_float32(live_server, assert_matches):
    client = make_client(live_server)
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=TEXTS)
    body = raw.http_response.json()
    assert all(isinstance(d["embedding"], str) for d in body["data"])
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
    assert all(v.shape == (384,) for v in decoded)
    assert_matches(decoded, TEXTS)
    parsed = raw.parse()
    assert np.allclose([d.embedding for d in parsed.data], decoded, atol=1e-7)


def test_single_string_input(live_server, assert_matches):
    result = make_client(live_server).embeddings.create(model=MODEL, input=TEXTS[0])
    assert len(result.data) == 1
    assert_matches(result.data[0].embedding, TEXTS[:1])


def test_encoding_format_float(live_server, wire, assert_matches):
    client = make_client(live_server, http_client=openai.DefaultHttpxClient(event_hooks=wire.hooks))
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=TEXTS, encoding_format="float")
    assert wire.bodies("/v1/embeddings")[0]["encoding_format"] == "float"
    assert all(isinstance(d["embedding"], list) for d in raw.http_response.json()["data"])
    assert_matches([d.embedding for d in raw.parse().data], TEXTS)


@pytest.mark.parametrize("encoding_format", [openai.omit, "float", "base64"])
def test_dimensions_are_renormalised_prefixes(live_server, encoding_format, assert_matches):
    result = make_client(live_server).embeddings.create(model=MODEL, input=TEXTS, dimensions=64,
                                                        encoding_format=encoding_format)
    got = [d.embedding for d in result.data]
    if encoding_format == "base64":  # an explicit format is returned untouched by the SDK
        got = [np.frombuffer(base64.b64decode(v), dtype="<f4") for v in got]
    got = np.asarray(got, dtype=np.float64)
    assert got.shape == (3, 64)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    full = np.asarray([d.embedding for d in make_client(live_server).embeddings.create(model=MODEL, input=TEXTS).data])
    prefix = full[:, :64] / np.linalg.norm(full[:, :64], axis=1, keepdims=True)
    assert np.allclose(got, prefix, atol=1e-5)
    assert_matches(got, TEXTS, dimensions=64)


def test_token_array_inputs(live_server, wire, assert_matches, tiktoken_offline):
    import tiktoken

    ids = [tiktoken.get_encoding("cl100k_base").encode_ordinary(t) for t in TEXTS]
    client = make_client(live_server, http_client=openai.DefaultHttpxClient(event_hooks=wire.hooks))
    result = client.embeddings.create(model=MODEL, input=ids)
    assert wire.bodies("/v1/embeddings")[0]["input"] == ids
    assert_matches([d.embedding for d in result.data], TEXTS)


def test_models_list_and_retrieve(live_server):
    client = make_client(live_server)
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model"


def test_async_client(live_server, assert_matches):
    async def run():
        async with openai.AsyncOpenAI(base_url=f"{live_server}/v1") as client:
            results = await asyncio.gather(*(client.embeddings.create(model=MODEL, input=[t]) for t in TEXTS))
            floats = await client.embeddings.create(model=MODEL, input=TEXTS, encoding_format="float")
            return [r.data[0].embedding for r in results], [d.embedding for d in floats.data]

    one_by_one, batched = asyncio.run(run())
    assert_matches(one_by_one, TEXTS)
    assert_matches(batched, TEXTS)


def test_unknown_model_is_not_found(live_server):
    client = make_client(live_server, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="no-such-model", input="hello")
    assert info.value.status_code == 404
    assert info.value.code == "model_not_found"
    assert isinstance(info.value.body, dict) and info.value.body.get("message")


@pytest.mark.parametrize("empty", ["", [], [""], [[]]])
def test_empty_input_is_bad_request(live_server, empty):
    client = make_client(live_server, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MODEL, input=empty)
    assert info.value.status_code == 400
    assert info.value.param == "input"


def test_async_errors(live_server):
    async def run():
        async with openai.AsyncOpenAI(base_url=f"{live_server}/v1", max_retries=0) as client:
            with pytest.raises(openai.NotFoundError):
                await client.embeddings.create(model="no-such-model", input="hello")
            with pytest.raises(openai.BadRequestError):
                await client.embeddings.create(model=MODEL, input="")

    asyncio.run(run())


def test_default_base_url_is_unreachable_here():
    """The socket guard works: the SDK's default api.openai.com is refused, nothing leaves the host."""
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(max_retries=0).embeddings.create(model=MODEL, input="hello")
