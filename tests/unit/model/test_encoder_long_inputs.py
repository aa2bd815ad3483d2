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


def test_a_huge_text_is_tokenized_from_a_prefix_only(encoder, monkeypatch):
    """5 MB of prose costs what a normal request does: the tokenizer is given under 1% of it in all (a prefix that
    already fills the context, and one twice as long to check the rest cannot matter), never the whole text."""
    text = ("Embedding servers must stay calm when a client sends far too much text at once. " * 70_000)[:5_000_000]
    seen: list[int] = []
    encode = encoder.text._encode

    def counting(texts, *args, **kwargs):
        seen.extend(len(t) for t in texts)
        return encode(texts, *args, **kwargs)

    monkeypatch.setattr(encoder.text, "_encode", counting)
    (ids,) = encoder.tokenize([text])
    assert len(ids) == encoder.context_length
    assert seen and sum(seen) < len(text) / 100, seen
    monkeypatch.undo()
    assert encoder.tokenize([text[:max(seen)]]) == [ids]  # the longest prefix it read gives the same ids
