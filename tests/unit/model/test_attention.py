"""Attention over packed sequences: how sequences are grouped, gathered and attended."""

from __future__ import annotations

import itertools
import random

import pytest
import torch
import torch.nn.functional as F

from embedding_server.model import attention as attention_module
from embedding_server.model.attention import attention_groups, plan_groups


def test_attention_groups_cover_everything_in_order_within_the_length_ratio():
    lengths = sorted(random.Random(5).randint(3, 200) for _ in range(300))
    groups = attention_groups(lengths)
    assert groups[0][0] == 0 and groups[-1][1] == len(lengths)
    assert all(end == nxt for (_, end), (nxt, _) in itertools.pairwise(groups))
    assert all(lengths[end - 1] <= lengths[start] * attention_module._GROUP_RATIO for start, end in groups)
    # Maximal: the next group's first length would break the ratio of the previous group.
    assert all(lengths[end] > lengths[start] * attention_module._GROUP_RATIO for start, end in groups[:-1])
    assert attention_groups([8, 8, 8]) == [(0, 3)]
    assert attention_groups([5]) == [(0, 1)]


def test_planned_groups_gather_each_sequence_into_its_padded_slots_and_keep_its_real_rows():
    lengths = [3, 3, 9, 10, 11, 30]  # groups: [3, 3] unpadded, [9, 10] and [11] padded/unpadded, [30]
    groups = plan_groups(lengths)
    assert [(g.row, g.rows, g.count, g.longest) for g in groups] == [(0, 6, 2, 3), (6, 19, 2, 10), (25, 11, 1, 11),
                                                                      (36, 30, 1, 30)]
    assert all(g.gather is None and g.keep is None and g.mask is None for g in groups if g.count * g.longest == g.rows)
    padded = groups[1]
    # Slots of sequence 0 (9 tokens) then sequence 1 (10): real slots map to the group's rows in order,
    # the padding slot repeats a real row (its key is masked, its output dropped).
    assert padded.gather.tolist() == list(range(9)) + [0] + list(range(9, 19))
    assert padded.keep.tolist() == list(range(9)) + list(range(10, 20))
    assert padded.mask.shape == (2, 1, 1, 10)
    assert padded.mask.reshape(-1).nonzero().squeeze(1).tolist() == padded.keep.tolist()
    assert torch.equal(padded.gather[padded.keep], torch.arange(19))


@pytest.mark.parametrize("n, length, masked", [(8, 13, False), (6, 9, True), (4, 15, True), (5, 40, True), (6, attention_module._PLAIN_ATTENTION_LENGTH, True)])
def test_plain_attention_equals_torchs_fused_kernel(n, length, masked):
    """Short groups take two batched products instead of scaled_dot_product_attention: same values."""
    generator = torch.Generator().manual_seed(n)
    q, k, v = (torch.randn(n, 4, length, 16, generator=generator) for _ in range(3))
    lengths = torch.randint(1, length + 1, (n,), generator=generator)
    lengths[0] = length
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1) if masked else None
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.view(n, 1, 1, length) if masked else None)
    got = attention_module._attention(q, k, v, mask.view(n, 1, 1, length) if masked else None)
    if masked:  # rows of padding queries are dropped by the caller; compare real query rows only
        keep = mask.view(n, 1, length, 1).expand_as(got)
        got, expected = got[keep], expected[keep]
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


@pytest.mark.parametrize("keys", [1, 2, 7, 13, 15, 16, 17, 40])
def test_softmax_of_short_rows_equals_torchs(keys):
    """Rows of fewer than 16 keys are padded with -inf for speed; the probabilities stay torch's, masked keys
    (-inf) included, and come back as float32 of the scores' shape."""
    scores = torch.randn(3, 4, 5, keys, generator=torch.Generator().manual_seed(keys))
    if keys > 1:  # a masked key (a row always keeps at least one real key)
        scores[0, 0, 0, 0] = float("-inf")
    for dtype in (torch.float32, torch.bfloat16):
        got = attention_module._softmax(scores.to(dtype))
        assert got.dtype == torch.float32 and got.shape == scores.shape
        assert torch.allclose(got, scores.to(dtype).softmax(-1, dtype=torch.float32), atol=1e-6)
    assert keys == 1 or attention_module._softmax(scores)[0, 0, 0, 0] == 0
