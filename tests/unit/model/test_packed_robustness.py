"""The padding-free forward never does worse than the transformers one: positions as transformers counts
them, token types always passed, a self-check that reaches every branch, a fallback when it raises."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from embedding_server.model import attention as attention_module
from embedding_server.model import packed as packed_module
from embedding_server.model.encoder import SentenceEncoder
from embedding_server.model.packed import PackedEncoder
from embedding_server.model.self_check import long_lengths
from tests.support.checkpoints import make_tiny_xlmr


@pytest.fixture(scope="module")
def no_token_types(tmp_path_factory):
    """A tiny XLM-R whose tokenizer returns no token_type_ids, as the real XLM-R / BGE-M3 tokenizers do."""
    return make_tiny_xlmr(tmp_path_factory.mktemp("ntt") / "xlmr", token_types=False)


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-xlmr"])
def test_a_pad_id_inside_an_input_gets_the_transformers_positions(tiny_models_dir, name):
    """transformers numbers RoBERTa positions by counting non-pad tokens; an input holding the pad id (literal
    pad text, or EMBED_TOKEN_IDS=model) must get the same vector on both forwards."""
    fast, standard = SentenceEncoder(tiny_models_dir / name), SentenceEncoder(tiny_models_dir / name, padding_free=False)
    assert fast.padding_free
    prefix, suffix = fast._template
    pad = fast.pad_id
    batch = [prefix + [pad + 5, pad, pad + 7, pad + 9] + suffix, prefix + [pad, pad, pad + 11] + suffix,
             prefix + [pad + 13] * 6 + suffix]
    np.testing.assert_allclose(fast.embed(batch), standard.embed(batch), atol=2e-6)


def test_token_types_are_included_even_when_the_tokenizer_has_none(no_token_types):
    """The packed embedding adds the token-type row 0, as the transformers forward does with no token_type_ids (4.x
    slices a buffer of max_position_embeddings rows for that, which a packed batch of more tokens overran: checked on
    4.40 in test_oldest_transformers); a packed batch longer than the positions matches the transformers forward."""
    fast, standard = SentenceEncoder(no_token_types), SentenceEncoder(no_token_types, padding_free=False)
    assert fast.padding_free and not fast._wants_token_types
    prefix, suffix = fast._template
    batch = [prefix + [10 + i % 50 for i in range(100)] + suffix for _ in range(3)]  # 306 tokens > 130 positions
    assert sum(map(len, batch)) > fast.model.config.max_position_embeddings
    np.testing.assert_allclose(fast.embed(batch), standard.embed(batch), atol=2e-6)
    shift = torch.randn(32, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():  # the type row really takes part: changing it changes both forwards alike
        for encoder in (fast, standard):
            encoder.model.embeddings.token_type_embeddings.weight[0] += shift
    changed = fast.embed(batch)
    np.testing.assert_allclose(changed, standard.embed(batch), atol=2e-6)
    assert not np.allclose(changed, SentenceEncoder(no_token_types).embed(batch), atol=1e-3)


def test_self_check_reaches_masked_fused_attention_and_a_batch_over_512_tokens(tiny_models_dir, monkeypatch):
    calls, blocked, totals = [], [], []
    real_attention, real_blocked, real_steps = (attention_module._attention, attention_module._blocked_attention,
                                                PackedEncoder.steps)

    def attention(q, k, v, mask):
        calls.append((q.shape[0], q.shape[2], mask is not None))
        return real_attention(q, k, v, mask)

    def blocked_attention(q, k, v, mask, block_heads, block_rows):
        blocked.append((q.shape[0], q.shape[2], block_heads < q.shape[1], block_rows < q.shape[2]))
        return (yield from real_blocked(q, k, v, mask, block_heads, block_rows))

    def steps(self, batch, *args):
        totals.append(sum(map(len, batch)))
        return (yield from real_steps(self, batch, *args))

    monkeypatch.setattr(attention_module, "_attention", attention)
    monkeypatch.setattr(attention_module, "_blocked_attention", blocked_attention)
    monkeypatch.setattr(PackedEncoder, "steps", steps)
    encoder = SentenceEncoder(tiny_models_dir / "tiny-xlmr")
    assert encoder.padding_free
    # The fused kernel's masked branch: several sequences of different lengths, over the plain-attention limit.
    assert any(n > 1 and length > attention_module._PLAIN_ATTENTION_LENGTH and masked for n, length, masked in calls)
    # The sliced forward, too: blocks of heads and of query rows, for groups of one and of several sequences.
    assert any(n > 1 and by_rows for n, _, _, by_rows in blocked) and any(n == 1 and by_rows for n, _, _, by_rows in blocked)
    assert any(by_heads for _, _, by_heads, _ in blocked)
    assert max(totals) > 512


def test_long_check_lengths_fit_the_positions():
    assert long_lengths(8192) == [50, 55, 58, 75, 100, 240]
    assert sum(long_lengths(127)) > 512 and max(long_lengths(127)) == 127


def test_a_broken_sliced_forward_fails_the_self_check(tiny_models_dir, monkeypatch, caplog):
    real = PackedEncoder._layer_in_chunks

    def skips_last_chunk(self, layer, x, groups, rows, pairs):
        before = x[-1].clone()
        yield from real(self, layer, x, groups, rows, pairs)
        x[-1] = before  # the last token's row keeps the previous layer's state

    monkeypatch.setattr(PackedEncoder, "_layer_in_chunks", skips_last_chunk)
    with caplog.at_level(logging.INFO, logger=packed_module.__name__):
        encoder = SentenceEncoder(tiny_models_dir / "tiny-bert")
    assert not encoder.padding_free
    assert "sliced forward differs" in caplog.text


def test_a_raising_packed_forward_falls_back_to_the_transformers_forward(tiny_models_dir, monkeypatch, caplog):
    fast = SentenceEncoder(tiny_models_dir / "tiny-bert")
    standard = SentenceEncoder(tiny_models_dir / "tiny-bert", padding_free=False)
    batch = [[2, 10, 11, 3], [2, 12, 3]]

    def broken(batch, slicing=None):
        yield
        raise RuntimeError("kernel exploded")

    monkeypatch.setattr(fast._packed, "steps", broken)
    with caplog.at_level(logging.WARNING):
        first = fast.start(batch, unit_ms=1.0)
        assert first.run()
        second = fast.embed(batch)
    vectors = first.result["dense"] / np.linalg.norm(first.result["dense"], axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, standard.embed(batch), atol=1e-6)
    np.testing.assert_allclose(second, vectors, atol=1e-7)
    assert first.fell_back == "RuntimeError: kernel exploded" and fast.fallbacks == 2
    assert caplog.text.count("padding-free forward failed") == 1  # logged once


def test_a_failing_fallback_raises(tiny_models_dir, monkeypatch):
    fast = SentenceEncoder(tiny_models_dir / "tiny-bert")
    monkeypatch.setattr(fast._packed, "steps", lambda *a: (_ for _ in ()).throw(RuntimeError("packed")))
    monkeypatch.setattr(fast, "_standard_outputs", lambda batch, heads: (_ for _ in ()).throw(ValueError("standard")))
    with pytest.raises(ValueError, match="standard"):
        fast.embed([[2, 10, 3]])


def test_weights_are_served_in_float32_whatever_the_checkpoint_stores(tiny_models_dir, tmp_path):
    import shutil

    from transformers import AutoModel

    half = tmp_path / "half"
    shutil.copytree(tiny_models_dir / "tiny-bert", half)
    AutoModel.from_pretrained(half).to(torch.float16).save_pretrained(half)
    encoder = SentenceEncoder(half)
    assert next(encoder.model.parameters()).dtype == torch.float32
    assert encoder.details.dtype == "float32"
