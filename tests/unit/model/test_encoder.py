"""SentenceEncoder on the tiny BERT / XLM-R checkpoints: limits, pooling, tokenisation, vectors."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from embedding_server.model.checkpoint import CheckpointError
from embedding_server.model.encoder import InputTooLong, SentenceEncoder
from embedding_server.model.pooling import normalize

LONG = "the quick brown fox jumps over the lazy dog " * 40
TEXTS = ["cosine similarity", "embedding models map sentences to dense vectors", "air", LONG]


def _variant(src: Path, dest: Path, st: bool = True, st_config: dict | None = None,
             model_max_length: int | None = None, truncation_side: str | None = None) -> Path:
    shutil.copytree(src, dest)
    if not st:
        shutil.rmtree(dest / "1_Pooling")
        (dest / "modules.json").unlink()
        (dest / "sentence_bert_config.json").unlink()
    if st_config is not None:
        (dest / "sentence_bert_config.json").write_text(json.dumps(st_config))
    for key, value in (("model_max_length", model_max_length), ("truncation_side", truncation_side)):
        if value is not None:
            cfg = json.loads((dest / "tokenizer_config.json").read_text())
            cfg[key] = value
            (dest / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dest


@pytest.fixture(scope="module")
def bert(tiny_models_dir) -> SentenceEncoder:
    return SentenceEncoder(tiny_models_dir / "tiny-bert")


@pytest.fixture(scope="module")
def xlmr(tiny_models_dir) -> SentenceEncoder:
    return SentenceEncoder(tiny_models_dir / "tiny-xlmr")


@pytest.fixture(scope="module")
def variants(tiny_models_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("encoder-variants")
    bert, xlmr = tiny_models_dir / "tiny-bert", tiny_models_dir / "tiny-xlmr"
    return {
        "bert-plain": _variant(bert, root / "bert-plain", st=False),
        "xlmr-plain": _variant(xlmr, root / "xlmr-plain", st=False),
        "bert-short-tok": _variant(bert, root / "bert-short-tok", st=False, model_max_length=20),
        "bert-st-64": _variant(bert, root / "bert-st-64", st_config={"max_seq_length": 64}),
        "bert-st-1000": _variant(bert, root / "bert-st-1000", st_config={"max_seq_length": 1000}),
        "xlmr-lower": _variant(xlmr, root / "xlmr-lower", st_config={"max_seq_length": 48, "do_lower_case": True}),
        "bert-left-trunc": _variant(bert, root / "bert-left-trunc", st=False, truncation_side="left"),
    }


# ----- context length ------------------------------------------------------------------
def test_st_max_seq_length_wins(bert, xlmr):
    assert bert.context_length == 32  # tokenizer says 512, positions 128
    assert xlmr.context_length == 48  # tokenizer says 8192, positions 130 - 2
    assert bert.details.context_length == 32


@pytest.mark.parametrize(
    "name, expected",
    [
        ("bert-plain", 128),  # tokenizer 512, bounded by 128 positions
        ("xlmr-plain", 128),  # tokenizer 8192, 130 positions minus pad id 1 + 1
        ("bert-short-tok", 20),  # tokenizer 20 < 128 positions
        ("bert-st-64", 64),  # ST beats the tokenizer's 512
        ("bert-st-1000", 128),  # ST still bounded by the positions
    ],
)
def test_context_length_rules(variants, name, expected):
    assert SentenceEncoder(variants[name]).context_length == expected


# ----- pooling ---------------------------------------------------------------------------
def test_auto_pooling_from_checkpoint(bert, xlmr, variants):
    assert bert.pooling == "mean"
    assert xlmr.pooling == "cls"
    assert xlmr.details.pooling == "cls"
    assert SentenceEncoder(variants["bert-plain"]).pooling == "mean"  # no ST files: mean


def test_pooling_override(tiny_models_dir):
    enc = SentenceEncoder(tiny_models_dir / "tiny-xlmr", pooling="max")
    assert enc.pooling == "max" and enc.details.pooling == "max"
    ids = enc.tokenize(["vector search engines"])[0]
    with torch.inference_mode():
        hidden = enc.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids))).last_hidden_state
    expected = normalize(hidden.max(1).values).numpy()
    np.testing.assert_allclose(enc.embed([ids]), expected, atol=1e-6)


def test_cls_pooling_is_first_hidden_state(xlmr):
    ids = xlmr.tokenize(["vector search engines"])[0]
    with torch.inference_mode():
        hidden = xlmr.model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids))).last_hidden_state
    np.testing.assert_allclose(xlmr.embed([ids]), normalize(hidden[:, 0]).numpy(), atol=1e-6)


# ----- tokenisation ----------------------------------------------------------------------
def test_tokenize_adds_special_tokens(bert, xlmr):
    ids = bert.tokenize(["cosine similarity"])[0]
    assert ids[0] == bert.tokenizer.cls_token_id and ids[-1] == bert.tokenizer.sep_token_id
    ids = xlmr.tokenize(["cosine similarity"])[0]
    assert ids[0] == xlmr.tokenizer.convert_tokens_to_ids("<s>")
    assert ids[-1] == xlmr.tokenizer.convert_tokens_to_ids("</s>")


@pytest.mark.parametrize("which", ["bert", "xlmr"])
def test_tokenize_truncates_to_exactly_the_limit(request, which):
    enc = request.getfixturevalue(which)
    sep = enc.tokenizer.sep_token_id
    short, long_ = enc.tokenize(["air", LONG])
    assert len(long_) == enc.context_length
    assert long_[-1] == sep
    assert long_.count(sep) == 1
    assert len(short) < enc.context_length
    full = enc.tokenizer(LONG)["input_ids"]
    assert len(full) > enc.context_length
    assert long_[:-1] == full[: enc.context_length - 1]


@pytest.mark.parametrize("which", ["bert", "xlmr", "bert-left"])
def test_tokenize_equals_the_transformers_tokenizer_call(request, variants, which):
    """tokenize() calls the fast tokenizer's backend directly: same ids as the transformers call,
    truncation side included, whatever the thread (each has its own backend copy)."""
    if which == "bert-left":
        enc = SentenceEncoder(variants["bert-left-trunc"])
        assert enc.tokenizer.truncation_side == "left"
    else:
        enc = request.getfixturevalue(which)
    texts = TEXTS + ["", "Ünïcödé façade, ok?", "x" * 300, "word " * 30]
    expected = enc.tokenizer(texts, truncation=True, max_length=enc.context_length)["input_ids"]
    assert enc.tokenize(texts) == expected
    with ThreadPoolExecutor(1) as other:
        assert other.submit(enc.tokenize, texts).result() == expected
    assert enc.tokenize(texts[:1] * 2) == expected[:1] * 2  # the per-thread truncation setting is kept right


def test_tokenize_without_truncation_raises(bert):
    with pytest.raises(InputTooLong) as info:
        bert.tokenize(["air", LONG, "dog"], truncate=False)
    assert info.value.index == 1
    assert info.value.limit == 32
    assert info.value.length > 32


def test_tokenize_without_truncation_accepts_short(bert):
    assert bert.tokenize(["air", "dog"], truncate=False) == bert.tokenize(["air", "dog"])


def test_do_lower_case(variants):
    enc = SentenceEncoder(variants["xlmr-lower"])
    assert enc.tokenize(["Vector SEARCH"]) == enc.tokenize(["vector search"])


def test_with_special_tokens(bert, xlmr):
    body = bert.tokenize(["cosine similarity"])[0][1:-1]
    assert bert.with_special_tokens(body) == bert.tokenize(["cosine similarity"])[0]
    wrapped = xlmr.with_special_tokens([10, 11, 12])
    assert wrapped == [xlmr.tokenizer.cls_token_id, 10, 11, 12, xlmr.tokenizer.sep_token_id]


def test_with_special_tokens_cuts_to_context(bert):
    wrapped = bert.with_special_tokens(list(range(5, 105)))
    assert len(wrapped) == bert.context_length
    assert wrapped[0] == bert.tokenizer.cls_token_id and wrapped[-1] == bert.tokenizer.sep_token_id
    assert wrapped[1:-1] == list(range(5, 5 + bert.context_length - 2))


# ----- vectors ---------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["bert", "xlmr"])
def test_embed_float32_unit_norm(request, which):
    enc = request.getfixturevalue(which)
    vectors = enc.embed(enc.tokenize(TEXTS))
    assert vectors.dtype == np.float32
    assert vectors.shape == (len(TEXTS), 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert enc.details.dimension == 32


@pytest.mark.parametrize("which", ["bert", "xlmr"])
def test_padded_batch_equals_each_alone(request, which):
    enc = request.getfixturevalue(which)
    ids = enc.tokenize(TEXTS)
    assert len({len(x) for x in ids}) == len(TEXTS), "texts of different lengths force padding"
    batch = enc.embed(ids)
    alone = np.vstack([enc.embed([x]) for x in ids])
    np.testing.assert_allclose(batch, alone, atol=1e-5)


def test_different_texts_differ(bert):
    v = bert.embed(bert.tokenize(["cosine similarity", "lazy dog"]))
    assert not np.allclose(v[0], v[1])


def test_details(bert):
    d = bert.details
    assert d.architecture == "bert"
    assert d.vocab_size == len(bert.tokenizer)
    assert d.parameters == sum(p.numel() for p in bert.model.parameters())
    assert d.size_bytes > (bert.info.path / "model.safetensors").stat().st_size


def test_broken_weights_raise_checkpoint_error(tiny_models_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_models_dir / "tiny-bert", tmp_path / "broken"))
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError) as info:
        SentenceEncoder(folder)
    assert str(folder) in str(info.value)
    assert "weights" in str(info.value)


def test_missing_tokenizer_raises_checkpoint_error(tiny_models_dir, tmp_path):
    folder = Path(shutil.copytree(tiny_models_dir / "tiny-bert", tmp_path / "no-tok"))
    (folder / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match="missing tokenizer"):
        SentenceEncoder(folder)
