"""Engine.tokens / Engine.decode, and token-id inputs read as the model's whole sequences (``ids_mode="model_full"``,
TEI's reading): special tokens as sent, cut to the context from either end, texts among them, prompts."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest

from embedding_server.engine.engine import Engine
from embedding_server.engine.errors import ContextLengthExceeded, InvalidInput
from embedding_server.engine.types import EmbedRequest
from embedding_server.settings import Settings

TEXT = "the quick brown fox"
LONG = "vector search engines rank documents by cosine similarity " * 8  # over tiny-bert's 32 tokens


@pytest.fixture(scope="module")
def engine(tmp_path_factory, tiny_models_dir):
    """An engine over tiny-bert with sentence-transformers prompts, its loop kept for the module."""
    root = tmp_path_factory.mktemp("token-models")
    shutil.copytree(tiny_models_dir / "tiny-bert", root / "prompted")
    (root / "prompted" / "config_sentence_transformers.json").write_text(json.dumps({"prompts": {"query": "query: "}}))
    loop = asyncio.new_event_loop()
    engine = Engine(Settings(models_dir=root, model="prompted"))
    loop.run_until_complete(engine.load_default())
    engine.run = lambda work: loop.run_until_complete(work)
    yield engine
    engine.stop(5)
    loop.close()


def vectors(engine, inputs, **options) -> np.ndarray:
    return engine.run(engine.embed(EmbedRequest(model=None, inputs=inputs, **options))).embeddings


def full(engine, inputs, **options) -> np.ndarray:
    return vectors(engine, inputs, token_ids=True, ids_mode="model_full", **options)


def test_tokens_and_decode(engine):
    (tokens,) = engine.run(engine.tokens([TEXT]))
    ids = [t.id for t in tokens]
    assert ids == engine.registry.resolve("prompted").encoder.tokenize([TEXT])[0]
    assert tokens[0].special and tokens[-1].special and "".join(t.text for t in tokens[1:-1]) == TEXT.replace(" ", "")
    assert all(TEXT.encode()[t.start:t.stop].decode() == t.text for t in tokens[1:-1])
    (prompted,) = engine.run(engine.tokens([TEXT], add_special_tokens=False, prompt_name="query"))
    assert [t.id for t in prompted] == engine.registry.resolve("prompted").encoder.tokenize(["query: " + TEXT])[0][1:-1]
    assert prompted[-1].stop == len("query: " + TEXT) and not any(t.special for t in prompted)
    assert engine.run(engine.decode([ids, ids[1:2]])) == [TEXT, "the"]
    assert engine.run(engine.decode([ids], skip_special_tokens=False))[0].startswith("[CLS] the")
    with pytest.raises(InvalidInput):
        engine.run(engine.tokens([TEXT], prompt_name="nope"))
    with pytest.raises(InvalidInput):
        engine.run(engine.tokens(["bad \ud800 text"]))


def test_many_texts_tokenize_on_a_thread(engine):
    texts = [f"text number {i}" for i in range(40)]
    want = engine.registry.resolve("prompted").encoder.tokenize(texts)
    assert [[t.id for t in tokens] for tokens in engine.run(engine.tokens(texts))] == want


def test_whole_sequences_are_taken_as_sent(engine):
    ids = engine.registry.resolve("prompted").encoder.tokenize([TEXT])[0]  # [CLS] ... [SEP]
    assert np.allclose(full(engine, [ids]), vectors(engine, [TEXT]), atol=1e-6)
    wrapped_twice = full(engine, [ids[:1] + ids + ids[-1:]])
    assert not np.allclose(wrapped_twice, vectors(engine, [TEXT]), atol=1e-3)  # nothing is added to them
    mixed = full(engine, [TEXT, ids, "another text"])
    assert np.allclose(mixed, vectors(engine, [TEXT, TEXT, "another text"]), atol=1e-6)


def test_whole_sequences_are_cut_to_the_context_from_either_end(engine):
    encoder = engine.registry.resolve("prompted").encoder
    ids = [t.id for t in encoder.tokens(LONG)]  # untruncated, special tokens included
    assert len(ids) > 32
    assert np.allclose(full(engine, [ids]), full(engine, [ids[:32]]), atol=1e-6)
    assert np.allclose(full(engine, [ids], truncation_direction="left"), full(engine, [ids[-32:]]), atol=1e-6)
    with pytest.raises(ContextLengthExceeded):
        full(engine, [ids], truncate=False)
    with pytest.raises(InvalidInput, match="outside the model's vocabulary"):
        full(engine, [[1, 10**6]])


def test_a_prompt_reads_whole_sequences_as_text(engine):
    ids = engine.registry.resolve("prompted").encoder.tokenize([TEXT])[0]
    want = vectors(engine, ["query: " + TEXT])
    assert np.allclose(full(engine, [ids], prompt_name="query"), want, atol=1e-6)
    assert np.allclose(vectors(engine, [TEXT], prompt_name="query"), want, atol=1e-6)
