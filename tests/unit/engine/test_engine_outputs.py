"""Engine.embed's request options: raw or normalised vectors, per-token states, truncation from either end,
prompts, the default model; requests asking for different outputs share one forward."""

from __future__ import annotations

import asyncio
import json
import shutil

import numpy as np
import pytest
import torch

from embedding_server.engine.engine import Engine
from embedding_server.engine.errors import InvalidInput
from embedding_server.engine.types import DENSE, TOKENS, EmbedRequest
from embedding_server.model.pooling import pool
from embedding_server.model.standard import pad_batch, standard_forward
from embedding_server.settings import Settings

TEXTS = ["the quick brown fox", "vector search engines rank documents by cosine similarity"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_models_dir):
    """tiny-bert, and a copy of it with sentence-transformers prompts."""
    root = tmp_path_factory.mktemp("engine-models")
    shutil.copytree(tiny_models_dir / "tiny-bert", root / "tiny-bert")
    shutil.copytree(tiny_models_dir / "tiny-bert", root / "prompted")
    (root / "prompted" / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None}))
    return root


def run(models, *requests, model="tiny-bert"):
    """Load the engine over ``models`` and embed ``requests`` concurrently; their results."""
    engine = Engine(Settings(models_dir=models, model=model))

    async def go():
        await engine.load_default()
        return engine, await asyncio.gather(*(engine.embed(r) for r in requests), return_exceptions=True)

    try:
        return asyncio.run(go())
    finally:
        engine.stop(5)


def reference(engine, texts, name="tiny-bert"):
    """(token ids, last hidden states, pooled vectors) from the transformers forward."""
    encoder = engine.registry.resolve(name).encoder
    ids = encoder.tokenize(texts)
    padded, mask = pad_batch(ids, encoder.pad_id)
    with torch.inference_mode():
        hidden = standard_forward(encoder.model, padded, mask, encoder._wants_token_types)
        pooled = pool(hidden, mask.long(), encoder.pooling).numpy()
    return ids, [hidden[i, :len(x)].numpy() for i, x in enumerate(ids)], pooled


def test_raw_and_normalised_vectors_and_token_states_from_one_forward(models):
    engine, (plain, raw, both, cut) = run(
        models, EmbedRequest("tiny-bert", TEXTS), EmbedRequest(None, TEXTS, normalize=False),
        EmbedRequest("tiny-bert", TEXTS, outputs=frozenset({DENSE, TOKENS})),
        EmbedRequest("tiny-bert", TEXTS, normalize=False, dimensions=8))
    ids, states, pooled = reference(engine, TEXTS)
    np.testing.assert_allclose(raw.embeddings, pooled, atol=1e-5)  # before L2 normalisation
    assert not np.allclose(np.linalg.norm(raw.embeddings, axis=1), 1.0)
    np.testing.assert_allclose(plain.embeddings, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(both.embeddings, plain.embeddings, atol=1e-7)
    assert [s.shape for s in both.token_states] == [(len(x), 32) for x in ids] and plain.token_states is None
    for got, want in zip(both.token_states, states):
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(cut.embeddings, pooled[:, :8], atol=1e-5)  # cut, not renormalised
    assert raw.model == "tiny-bert"  # model None: the default model


def test_only_token_states(models):
    engine, (tokens,) = run(models, EmbedRequest("tiny-bert", TEXTS, outputs=frozenset({TOKENS})))
    ids, states, _ = reference(engine, TEXTS)
    assert tokens.embeddings.shape == (2, 0) and tokens.token_counts == [len(x) for x in ids]
    for got, want in zip(tokens.token_states, states):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_truncation_from_the_left_keeps_the_end(models):
    long_text = " ".join(f"w{i}" for i in range(200)) + " the quick brown fox"
    engine, (right, left) = run(models, EmbedRequest("tiny-bert", [long_text], outputs=frozenset({TOKENS})),
                                EmbedRequest("tiny-bert", [long_text], truncation_direction="left",
                                             outputs=frozenset({TOKENS})))
    encoder = engine.registry.resolve("tiny-bert").encoder
    tokenizer = encoder.tokenizer
    tokenizer.truncation_side = "left"
    want = tokenizer(long_text, truncation=True, max_length=encoder.context_length)["input_ids"]
    tokenizer.truncation_side = "right"
    assert right.token_counts == left.token_counts == [encoder.context_length]
    assert encoder.tokenize([long_text], direction="left") == [want]
    end = encoder.tokenize(["the quick brown fox"])[0][1:-1]
    assert want[-1 - len(end):-1] == end  # the end survived
    assert not np.allclose(left.token_states[0], right.token_states[0])


def test_a_huge_text_truncated_from_the_left_reads_only_its_end(models):
    """Texts over the prefix limit are tokenized from the end they keep (megabytes in milliseconds)."""
    engine, _ = run(models)
    encoder = engine.registry.resolve("tiny-bert").encoder
    huge = "start " * 200_000 + "the quick brown fox"
    tail = encoder.tokenize([huge[-5_000:]], direction="left")
    assert encoder.tokenize([huge], direction="left") == tail
    assert encoder.tokenize([huge]) == encoder.tokenize([huge[:5_000]])


def test_prompts_come_from_the_folder_and_unknown_names_are_refused(models):
    engine, (query, by_hand, unknown, none) = run(
        models, EmbedRequest("prompted", TEXTS, prompt_name="query"), EmbedRequest("prompted", ["query: " + t for t in TEXTS]),
        EmbedRequest("prompted", TEXTS, prompt_name="nope"), EmbedRequest("tiny-bert", TEXTS, prompt_name="query"))
    np.testing.assert_allclose(query.embeddings, by_hand.embeddings, atol=1e-6)
    assert query.token_counts == by_hand.token_counts
    assert isinstance(unknown, InvalidInput) and unknown.param == "prompt_name"
    assert unknown.message.endswith('Available prompts: ["passage", "query"]')  # TEI's words: clients parse them
    assert isinstance(none, InvalidInput) and none.message.endswith("Available prompts: []")
