"""Huge inputs are tokenized from a prefix, with exactly the ids full tokenization gives."""

from __future__ import annotations

import pytest

from embedding_server.model.encoder import InputTooLong, SentenceEncoder

LONG_TEXTS = [
    "hello world " * 20_000,
    "中文字符" * 30_000,
    "a b c " * 100 + "y" * 60_000,  # a giant "word" after a few short ones
    "z" * 80_000,  # no token boundary at all
    ("Ünïcödé 🚀 مرحبا, punctuation! " * 8_000),
]


@pytest.fixture(scope="module", params=["minilm", "tiny-xlmr"])
def encoder(request, minilm_dir, tiny_models_dir):
    return SentenceEncoder(minilm_dir if request.param == "minilm" else tiny_models_dir / request.param)


@pytest.mark.parametrize("text", LONG_TEXTS, ids=["words", "cjk", "giant-word", "no-boundary", "mixed"])
def test_prefix_tokenization_equals_full(encoder, text):
    assert len(text) > encoder._clip_chars  # the prefix path is really taken
    full = encoder.tokenizer([text], truncation=True, max_length=encoder.context_length)["input_ids"][0]
    assert encoder.tokenize([text]) == [full]


def test_refusal_without_truncation_is_immediate(encoder):
    with pytest.raises(InputTooLong):
        encoder.tokenize(["short", "word " * 100_000], truncate=False)
