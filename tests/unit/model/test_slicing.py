"""The sliced padding-free forward: same vectors as the unsliced one, in units of bounded size."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from embedding_server.model import attention as attention_module
from embedding_server.model.dense import Dense
from embedding_server.model.encoder import SentenceEncoder
from embedding_server.model.slicing import MIN_BLOCK_ROWS, MIN_ROWS, ForwardCost, Slicing
from tests.support.checkpoints import make_tiny_xlmr

# Long sequences (attention blocks), a padded group of several (masked blocks), short ones (unsliced groups).
LENGTHS = [700, 5, 300, 290, 310, 12, 64, 9]


@pytest.fixture(scope="module")
def long_xlmr(tmp_path_factory) -> SentenceEncoder:
    """A tiny XLM-R with 1,026 positions (inputs up to 1,024 tokens), like BGE-M3 but small."""
    path = make_tiny_xlmr(tmp_path_factory.mktemp("long") / "xlmr", max_seq_length=1024, positions=1026,
                          token_types=False)
    encoder = SentenceEncoder(path)
    assert encoder.padding_free
    encoder.warm_up()
    return encoder


def _batch(encoder: SentenceEncoder, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefix, suffix = encoder._template
    return [prefix + [rng.randint(encoder.pad_id + 1, encoder.details.embedding_rows - 1)
                      for _ in range(n - len(prefix) - len(suffix))] + suffix for n in lengths]


def _run(encoder: SentenceEncoder, batch, slicing: Slicing) -> np.ndarray:
    with torch.inference_mode():
        hidden = encoder._packed.forward(batch, slicing)
    return hidden


@pytest.mark.parametrize("slicing", [Slicing(rows=128, pairs=16 * 128, block_rows=16), Slicing(rows=200, pairs=50_000),
                                     Slicing(rows=None, pairs=20_000, block_rows=32), Slicing(rows=64),
                                     Slicing(rows=None, pairs=300_000)])
def test_sliced_hidden_states_equal_the_unsliced_ones(long_xlmr, slicing):
    batch = _batch(long_xlmr, LENGTHS)
    whole = _run(long_xlmr, batch, Slicing())
    sliced = _run(long_xlmr, batch, slicing)
    assert sliced.shape == whole.shape == (sum(LENGTHS), long_xlmr.details.dimension)
    assert torch.allclose(sliced, whole, atol=1e-5), (sliced - whole).abs().max()


def test_sliced_job_vectors_equal_embed_and_the_transformers_forward(long_xlmr, tiny_models_dir):
    """Through the job API the worker uses, with units of ~0.01 ms (many slices of one unit each)."""
    batch = _batch(long_xlmr, LENGTHS, seed=1)
    expected = long_xlmr.embed(batch)
    job = long_xlmr.start(batch, unit_ms=0.01)
    slices = 0
    while not job.run(0.0):
        slices += 1
    assert slices > 20 and job.slices == slices + 1
    vectors = job.result["dense"] / np.linalg.norm(job.result["dense"], axis=1, keepdims=True)
    cosine = (vectors * expected).sum(1)
    assert cosine.min() >= 0.99999, cosine
    standard = SentenceEncoder(long_xlmr.info.path, padding_free=False).embed(batch)
    assert (vectors * standard).sum(1).min() >= 0.99999


def test_units_are_bounded_by_the_slicing(long_xlmr, monkeypatch):
    """No attention call sees more (query, key) pairs than the unit allows (no full length x length scores
    per head), and no dense product more rows: the memory of a long forward is bounded by the unit."""
    pairs, rows = [], []
    real_sdpa, real_dense = attention_module.F.scaled_dot_product_attention, Dense.__call__

    heads = long_xlmr.model.config.num_attention_heads

    def sdpa(q, k, v, attn_mask=None, **kwargs):  # torch.nn.functional's: transformers calls it too
        pairs.append(q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] / heads)  # all-head pairs
        return real_sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    def dense(self, x):
        rows.append(x.shape[0])
        return real_dense(self, x)

    monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", sdpa)
    monkeypatch.setattr(Dense, "__call__", dense)
    slicing = Slicing(rows=128, pairs=64 * 700, block_rows=16)
    _run(long_xlmr, _batch(long_xlmr, LENGTHS), slicing)
    assert max(rows) <= 128
    assert max(pairs) <= slicing.pairs
    assert max(pairs) >= 16 * 700 / heads  # the 700-token sequence did run in blocks of one head and rows


def test_forward_cost_sizes_units_to_the_time_budget():
    cost = ForwardCost(layers=24, token_ms=0.16, pair_ms=4e-5)
    slicing = cost.slicing(unit_ms=100)
    assert slicing.rows == 624 and slicing.rows % 16 == 0
    assert slicing.pairs == pytest.approx(2_500_000) and slicing.block_rows == MIN_BLOCK_ROWS
    assert cost.slicing(unit_ms=1).rows == MIN_ROWS  # never smaller products than that


def test_measured_cost_is_positive_and_scales_with_width(long_xlmr, tiny_models_dir):
    cost = long_xlmr.cost
    assert cost is not None and cost.layers == 2 and cost.token_ms > 0 and cost.pair_ms > 0
    fallback_only = SentenceEncoder(tiny_models_dir / "tiny-bert", padding_free=False)
    fallback_only.warm_up()
    assert fallback_only.cost is None and fallback_only.start([[1, 2, 3]], unit_ms=1.0).run() is True
