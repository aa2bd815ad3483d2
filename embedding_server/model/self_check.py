"""The load-time check that the padding-free forward reproduces the transformers forward on this model.

Every branch of the packed forward is exercised on the loaded weights: both dense paths (short
passes with the blocked weight copies, long ones without), plain attention for short groups, the
fused kernel with a padding mask for several sequences over 48 tokens of different lengths, a batch
of more tokens than ``max_position_embeddings``, a pad id inside an input (position numbering), and
the sliced forward (chunked dense work, attention in blocks of query rows) against the unsliced one.
The long batches run through the first two layers only: layers are alike (checked structurally), and
on BGE-M3 the transformers forward of that batch through all 24 would add ~10 s to every load.
"""

from __future__ import annotations

import torch

from .dense import SHORT_TOKENS
from .slicing import Slicing
from .standard import pad_batch, standard_forward

# Short batches through all layers: 39 tokens (blocked copies) and 163 (the default path).
FULL_DEPTH = ([3, 9, 10, 17], [5, 30, SHORT_TOKENS])
# Through two layers: one padded attention group over 48 tokens (masked fused kernel), single-sequence
# groups, then sequences as long as the positions allow (up to 240) until over 512 tokens in all.
LONG_START, LONG_TAIL, LONG_TOTAL = [50, 55, 58, 75, 100], 240, 512
# Slicing small enough to cut that batch into many units: attention in blocks of heads and of query rows.
TINY_SLICING = Slicing(rows=64, pairs=2048, block_rows=16)


def long_lengths(max_length: int) -> list[int]:
    """The long check's sequence lengths for a model whose inputs hold at most ``max_length`` tokens."""
    lengths = list(LONG_START)
    while sum(lengths) <= LONG_TOTAL:
        lengths.append(min(LONG_TAIL, max_length))
    return lengths


def _max_length(model) -> int:
    positions = int(getattr(model.config, "max_position_embeddings", 512))
    padding_idx = getattr(model.embeddings, "padding_idx", None)
    return positions if padding_idx is None else positions - int(padding_idx) - 1


# Token ids are drawn from the first ids after the pad id: random rows all over a 1 GB embedding matrix
# (BGE-M3's) would fault most of its mmap-ed pages in at every load.
ID_RANGE = 2048


def _batch(lengths: list[int], vocab: int, pad_id: int, seed: int, pad_inside: bool = False) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    high = min(vocab, pad_id + 1 + ID_RANGE)
    batch = [torch.randint(pad_id + 1, high, (n,), generator=generator).tolist() for n in lengths]
    if pad_inside:
        batch[-1][len(batch[-1]) // 2] = pad_id  # literal pad text, or EMBED_TOKEN_IDS=model
    return batch


# With bfloat16 weights both forwards round differently (the packed one keeps its residual stream in float32), so
# they are compared by the cosine of each token's hidden state: a structural error (positions, masks, slicing) gives
# far lower values, bfloat16 rounding ~0.9999.
MIN_BF16_COSINE = 0.995


def _differs(got: torch.Tensor, expected: torch.Tensor) -> str | None:
    if got.shape != expected.shape:
        return f"output shape {tuple(got.shape)} != {tuple(expected.shape)}"
    if expected.dtype != torch.float32:
        cosine = torch.nn.functional.cosine_similarity(got.float(), expected.float(), dim=-1).min().item()
        return None if cosine >= MIN_BF16_COSINE else f"differs from the standard forward (token cosine {cosine:.4f})"
    error = (got - expected).abs().max().item()
    if not error <= 1e-3 * max(1.0, expected.abs().max().item()):
        return f"differs from the standard forward by {error:.2e}"
    return None


def _compare(packed, model, batch: list[list[int]], pad_id: int, slicing: Slicing | None = None) -> str | None:
    ids, mask = pad_batch(batch, pad_id)
    expected = standard_forward(model, ids, mask, packed.wants_token_types)[mask]
    reason = _differs(packed.forward(batch), expected)
    if reason is None and slicing is not None:
        reason = _differs(packed.forward(batch, slicing), expected)
        reason = reason and f"sliced forward {reason}"
    return reason


class _FirstLayers:
    """Within the block, the model and the packed forward run only their first ``count`` layers."""

    def __init__(self, packed, model, count: int):
        self.packed, self.model, self.count = packed, model, count

    def __enter__(self):
        self.layers, self.modules = self.packed.layers, self.model.encoder.layer
        self.packed.layers = self.layers[:self.count]
        self.model.encoder.layer = torch.nn.ModuleList(list(self.modules)[:self.count])

    def __exit__(self, *exc):
        self.packed.layers, self.model.encoder.layer = self.layers, self.modules


@torch.inference_mode()
def self_check(packed, model, pad_id: int) -> str | None:
    """None if ``packed`` matches the model's own forward on every branch, else why not."""
    vocab = int(model.config.vocab_size)
    for seed, lengths in enumerate(FULL_DEPTH):
        reason = _compare(packed, model, _batch(lengths, vocab, pad_id, seed), pad_id)
        if reason:
            return reason
    with _FirstLayers(packed, model, 2):
        batch = _batch(long_lengths(_max_length(model)), vocab, pad_id, seed=2, pad_inside=True)
        return _compare(packed, model, batch, pad_id, TINY_SLICING)
