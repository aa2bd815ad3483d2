"""The padding-free forward: same hidden states and vectors as the transformers forward, or not used."""

from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedding_server.model import packed as packed_module
from embedding_server.model.dense import SHORT_TOKENS, Dense, blocked_kernels_available
from embedding_server.model.encoder import SentenceEncoder
from embedding_server.model.packed import PackedEncoder, pad_batch
from embedding_server.model.pooling import POOLING_MODES, pool, pool_packed

# Unsorted, with repeats (equal-length attention groups), a long outlier and a singleton length.
LENGTHS = [9, 3, 17, 9, 40, 4, 10, 9, 25, 3, 11]


def _random_batch(encoder: SentenceEncoder, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    prefix, suffix = encoder._template
    low, high = encoder.pad_id + 1, int(encoder.model.config.vocab_size) - 1
    return [prefix + [rng.randint(low, high) for _ in range(n - len(prefix) - len(suffix))] + suffix
            for n in lengths]


@pytest.fixture(scope="module", params=[("tiny-bert", 0), ("tiny-bert", 64), ("tiny-xlmr", 0), ("tiny-xlmr", 64)],
                ids=lambda p: f"{p[0]}-copy{p[1]}")
def pair(request, tiny_models_dir):
    """(padding-free encoder, transformers-forward encoder) of one tiny checkpoint, with or
    without the short-batch weight copies."""
    name, copy_mb = request.param
    path = tiny_models_dir / name
    return SentenceEncoder(path, short_batch_copy_mb=copy_mb), SentenceEncoder(path, padding_free=False)


def test_tiny_bert_and_xlmr_take_the_padding_free_path(pair):
    fast, standard = pair
    assert fast.padding_free and not standard.padding_free
    assert fast._packed.short_batch_copy == (fast.forward_kind.endswith("short-batch weight copies"))
    assert standard.forward_kind == "transformers forward"


def test_short_batch_copies_follow_the_memory_setting(tiny_models_dir):
    path = tiny_models_dir / "tiny-bert"
    assert not SentenceEncoder(path, short_batch_copy_mb=0)._packed.short_batch_copy
    assert SentenceEncoder(path, short_batch_copy_mb=1)._packed.short_batch_copy == blocked_kernels_available()
    model = SentenceEncoder(path, padding_free=False).model
    too_small = PackedEncoder.build(model, True, 0, short_copy_bytes=1)  # below the weights' size
    assert too_small is not None and not too_small.short_batch_copy


def test_fused_query_key_value_is_shared_with_the_model(pair):
    fast, _ = pair
    for module_layer, layer in zip(fast.model.encoder.layer, fast._packed.layers):
        attention = module_layer.attention.self
        fused = layer.qkv.weight
        for part, offset in ((attention.query, 0), (attention.key, 1), (attention.value, 2)):
            assert part.weight.untyped_storage().data_ptr() == fused.untyped_storage().data_ptr()
            assert torch.equal(part.weight, fused[offset * fast.details.dimension:(offset + 1) * fast.details.dimension])


def test_hidden_states_match_the_transformers_forward_in_caller_order(pair):
    fast, _ = pair
    batch = _random_batch(fast, LENGTHS)
    ids, mask = pad_batch(batch, fast.pad_id)
    with torch.inference_mode():
        inputs = {"input_ids": ids, "attention_mask": mask.long()}
        if fast._wants_token_types:
            inputs["token_type_ids"] = torch.zeros_like(ids)
        expected = fast.model(**inputs).last_hidden_state[mask]  # row-major: sequence by sequence, caller order
        got = fast._packed.forward(batch)
    assert got.shape == (sum(LENGTHS), fast.details.dimension)
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_the_embedding_layer_runs_on_real_tokens_only(pair):
    """A long input among short ones must not make the embedding layer build a (count, longest, hidden)
    padded layout (a 256-token input among 31 short ones: ~12 MB per intermediate of that module)."""
    fast, _ = pair
    seen = []
    embeddings = fast.model.embeddings
    hooks = [module.register_forward_hook(lambda module, args, out: seen.append(tuple(out.shape)))
             for module in (embeddings.word_embeddings, embeddings.position_embeddings)]
    try:
        with torch.inference_mode():
            fast._packed.forward(_random_batch(fast, LENGTHS))
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == [(sum(LENGTHS), fast.details.dimension)] * 2


@pytest.mark.parametrize("mode", POOLING_MODES)
def test_vectors_match_the_transformers_forward_for_every_pooling(pair, mode):
    fast, standard = pair
    fast.pooling = standard.pooling = mode
    try:
        for lengths in (LENGTHS, [12], [7, 7, 7], [11, 10]):  # many groups; one sequence; one group, unpadded; one, padded
            batch = _random_batch(fast, lengths, seed=len(lengths))
            a, b = fast.embed(batch), standard.embed(batch)
            assert a.dtype == np.float32 and a.shape == b.shape == (len(lengths), fast.details.dimension)
            np.testing.assert_allclose(a, b, atol=2e-6)
            np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    finally:
        fast.pooling = standard.pooling = fast.info.pooling or "mean"


def test_a_vector_does_not_depend_on_its_batch_neighbours(pair):
    fast, _ = pair
    batch = _random_batch(fast, LENGTHS, seed=3)
    together = fast.embed(batch)
    alone = np.stack([fast.embed([ids])[0] for ids in batch])
    np.testing.assert_allclose(together, alone, atol=2e-6)


@pytest.mark.parametrize("lengths", [[3, 1, 5, 2], [4]], ids=["batch", "one sequence"])
@pytest.mark.parametrize("mode", POOLING_MODES)
def test_pool_packed_equals_pool_on_the_padded_layout(mode, lengths):
    generator = torch.Generator().manual_seed(1)
    packed = torch.randn(sum(lengths), 6, generator=generator)
    padded = torch.zeros(len(lengths), max(lengths), 6)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, part in enumerate(packed.split(lengths)):
        padded[row, :len(part)] = part
        mask[row, :len(part)] = 1
    assert torch.allclose(pool_packed(packed, lengths, mode), pool(padded, mask, mode), atol=1e-6)


def test_pool_packed_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_packed(torch.zeros(2, 3), [2], "median")


def _tiny_bert_with(tiny_models_dir: Path, dest: Path, **config_changes) -> Path:
    """A copy of the tiny BERT checkpoint with ``config_changes`` written into its config.json."""
    shutil.copytree(tiny_models_dir / "tiny-bert", dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(config_changes)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_relative_position_models_keep_the_transformers_forward(tiny_models_dir, tmp_path, caplog):
    path = _tiny_bert_with(tiny_models_dir, tmp_path / "relative", position_embedding_type="relative_key")
    with caplog.at_level(logging.INFO, logger=packed_module.__name__):
        encoder = SentenceEncoder(path)
    assert not encoder.padding_free
    assert "relative_key" in caplog.text
    vectors = encoder.embed(_random_batch(encoder, [5, 9]))
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_exact_gelu_is_applied_by_the_product_and_other_activations_keep_their_module(pair):
    fast, _ = pair
    assert all(layer.up.gelu and layer.activation is None for layer in fast._packed.layers)  # tiny ones use "gelu"
    assert packed_module._is_exact_gelu(F.gelu)
    from transformers.activations import ACT2FN
    for name in ("gelu_new", "gelu_python", "relu", "silu"):
        assert not packed_module._is_exact_gelu(ACT2FN[name]), name


@pytest.mark.parametrize("activation", ["gelu", "gelu_new"])
def test_the_padding_free_forward_matches_with_either_gelu(tiny_models_dir, tmp_path, activation):
    """The product's own exact GELU only where the model's is exact; the tanh one keeps its module."""
    path = _tiny_bert_with(tiny_models_dir, tmp_path / activation, hidden_act=activation)
    fast, standard = SentenceEncoder(path), SentenceEncoder(path, padding_free=False)
    assert fast.padding_free
    assert all(layer.up.gelu == (activation == "gelu") for layer in fast._packed.layers)
    assert all((layer.activation is None) == (activation == "gelu") for layer in fast._packed.layers)
    batch = _random_batch(fast, LENGTHS)
    np.testing.assert_allclose(fast.embed(batch), standard.embed(batch), atol=2e-6)


def test_an_unrecognised_layer_structure_is_declined(pair):
    _, standard = pair
    layer = standard.model.encoder.layer[0]
    saved = layer.intermediate
    try:
        del layer.intermediate
        assert PackedEncoder.build(standard.model, standard._wants_token_types, standard.pad_id) is None
    finally:
        layer.intermediate = saved
    assert PackedEncoder.build(standard.model, standard._wants_token_types, standard.pad_id) is not None


def test_a_packed_forward_that_disagrees_with_the_model_is_not_used(pair, monkeypatch, caplog):
    _, standard = pair
    real_layer = PackedEncoder._layer
    monkeypatch.setattr(PackedEncoder, "_layer", lambda self, layer, x, plans: real_layer(self, layer, x, plans) * 1.5)
    with caplog.at_level(logging.INFO, logger=packed_module.__name__):
        assert PackedEncoder.build(standard.model, standard._wants_token_types, standard.pad_id) is None
    assert "differs from the standard forward" in caplog.text


@pytest.mark.skipif(not blocked_kernels_available(), reason="this torch build has no oneDNN prepacked linear")
def test_dense_blocked_copy_matches_the_default_product_for_short_and_long_inputs():
    generator = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(48, 32, generator=generator), torch.randn(48, generator=generator)
    dense = Dense(weight, bias)
    dense.add_blocked_copy()
    assert dense.blocked is not None
    for rows in (1, 13, 104, SHORT_TOKENS, SHORT_TOKENS + 1, 300):  # 1 and 13 are padded to 8 and 16 rows
        x = torch.randn(rows, 32, generator=generator)
        assert torch.allclose(dense(x), F.linear(x, weight, bias), atol=1e-5)


@pytest.mark.skipif(not blocked_kernels_available(), reason="this torch build has no oneDNN prepacked linear")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dense_with_gelu_equals_the_product_then_gelu_on_every_path(dtype, cpu):
    """Blocked (short inputs, GELU as the kernel's post-op) where the CPU can make the copy for ``dtype``, default
    (long inputs, and every input elsewhere) and ``into``."""
    generator = torch.Generator().manual_seed(4)
    weight, bias = torch.randn(48, 32, generator=generator).to(dtype), torch.randn(48, generator=generator).to(dtype)
    dense = Dense(weight, bias, gelu=True)
    if dtype == torch.float32 or cpu.bf16_blocked_weights:
        dense.add_blocked_copy()
        assert dense.blocked is not None
    tolerance = 1e-5 if dtype == torch.float32 else 0.05  # bf16 outputs: the post-op rounds once, not twice
    for rows in (1, 13, SHORT_TOKENS, 300):
        x = torch.randn(rows, 32, generator=generator)
        expected = F.gelu(F.linear(x.to(dtype).float(), weight.float(), bias.float()))
        assert torch.allclose(dense(x).float(), expected, atol=tolerance, rtol=tolerance), rows
        out = torch.empty(rows, 48, dtype=dtype)
        dense.into(x, out)
        assert torch.allclose(out.float(), expected, atol=tolerance, rtol=tolerance), rows
    assert not torch.allclose(dense(x).float(), F.linear(x.to(dtype), weight, bias).float(), atol=tolerance)


def test_dense_refuses_a_blocked_copy_of_float16_weights():
    dense = Dense(torch.zeros(4, 4, dtype=torch.float16), torch.zeros(4, dtype=torch.float16))
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        dense.add_blocked_copy()
    assert dense.blocked is None


def test_a_failing_self_check_keeps_the_transformers_forward(pair, monkeypatch, caplog):
    _, standard = pair

    def broken(self, layer, x, plans):
        raise IndexError("simulated kernel failure")

    monkeypatch.setattr(PackedEncoder, "_layer", broken)
    with caplog.at_level(logging.INFO, logger=packed_module.__name__):
        assert PackedEncoder.build(standard.model, standard._wants_token_types, standard.pad_id) is None
    assert "self-check failed: IndexError" in caplog.text
