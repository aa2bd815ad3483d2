"""Attention over packed sequences: groups of near-equal length, each padded to its longest.

The padding-free forward keeps all tokens of a batch in one (tokens, features) matrix; attention
alone needs whole sequences. Sequences (in ascending length) are grouped while the longest is at
most ``_GROUP_RATIO`` x the shortest, so a group's own padding stays small, and each group takes
one attention call.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

# Group sequences for attention while the longest is at most this much longer than the shortest.
_GROUP_RATIO = 1.2
# Longest sequence for which attention runs as two plain batched products (see _attention).
_PLAIN_ATTENTION_LENGTH = 48
# Rows shorter than this are padded for the softmax (see _softmax).
_SOFTMAX_WIDTH = 16


class Group(NamedTuple):
    """Sequences that share one attention call, padded to the longest of them."""

    row: int  # first packed row
    rows: int  # real tokens
    count: int  # sequences
    longest: int
    gather: torch.Tensor | None  # (count x longest,) packed row of each padded slot; None: no padding
    keep: torch.Tensor | None  # (rows,) padded slot of each real token
    mask: torch.Tensor | None  # (count, 1, 1, longest) real keys


def attention_groups(lengths: list[int]) -> list[tuple[int, int]]:
    """Split ascending ``lengths`` into runs whose longest is at most ``_GROUP_RATIO`` x the shortest."""
    groups, start = [], 0
    for i in range(1, len(lengths) + 1):
        if i == len(lengths) or lengths[i] > lengths[start] * _GROUP_RATIO:
            groups.append((start, i))
            start = i
    return groups


def plan_groups(lengths: list[int]) -> list[Group]:
    """The attention groups of packed sequences of ascending ``lengths`` (see ``attention_groups``)."""
    groups, row = [], 0
    for start, end in attention_groups(lengths):
        sizes = lengths[start:end]
        longest, rows = sizes[-1], sum(sizes)
        if sizes[0] == longest:
            groups.append(Group(row, rows, len(sizes), longest, None, None, None))
        else:
            real = torch.arange(longest).unsqueeze(0) < torch.tensor(sizes).unsqueeze(1)
            keep = real.reshape(-1).nonzero().squeeze(1)
            gather = torch.zeros(len(sizes) * longest, dtype=torch.long)  # padding slots: the group's first row
            gather[keep] = torch.arange(rows)
            groups.append(Group(row, rows, len(sizes), longest, gather, keep, real.view(len(sizes), 1, 1, longest)))
        row += rows
    return groups


def attend(qkv: torch.Tensor, groups: list[Group], heads: int) -> torch.Tensor:
    """Attention output (tokens, hidden) of the packed (tokens, 3 x hidden) query/key/value rows, ``heads`` heads."""
    steps = attend_steps(qkv, groups, heads)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def attend_steps(qkv: torch.Tensor, groups: list[Group], heads: int, max_pairs: float = float("inf"),
                 min_rows: int = 256):
    """Generator form of ``attend``: yields between units of work, returns the attention output.

    Each group is gathered once into its padded layout (padding slots repeat a real row: their
    keys are masked and their outputs dropped), and its real rows are selected straight into the
    result: one copy in and one out per group. A group with more than ``max_pairs`` (query, key)
    pairs (counted over all heads) runs in blocks of heads, and if one head is still too much, of
    query rows too (at least ``min_rows``), each against all keys and values of its sequences: the
    same result, computed in bounded pieces, with a yield after each block.
    """
    hidden = qkv.shape[1] // 3
    real = groups[-1].row + groups[-1].rows  # rows of qkv after these are padding (see PackedEncoder.steps)
    attended = qkv.new_empty(real, hidden) if len(groups) > 1 else None
    for group in groups:
        part = qkv[group.row:group.row + group.rows]
        if group.gather is not None:
            part = part.index_select(0, group.gather)
        q, k, v = part.view(group.count, group.longest, 3, heads, hidden // heads).permute(2, 0, 3, 1, 4)
        block_heads, block_rows = _blocks(group, heads, max_pairs, min_rows)
        if block_heads >= heads and block_rows >= group.longest:
            out = _attention(q, k, v, group.mask)
        else:
            out = yield from _blocked_attention(q, k, v, group.mask, block_heads, block_rows)
        out = out.transpose(1, 2).reshape(-1, hidden)
        if attended is None:  # one group: its output is the result
            return out if group.keep is None else out.index_select(0, group.keep)
        rows = attended[group.row:group.row + group.rows]
        if group.keep is None:
            rows.copy_(out)
        else:
            torch.index_select(out, 0, group.keep, out=rows)
        yield
    return attended


def _blocks(group: Group, heads: int, max_pairs: float, min_rows: int) -> tuple[int, int]:
    """(heads, query rows) per block so that a block holds at most ``max_pairs`` all-head pairs.

    Heads first: the fused kernel runs a block of heads over all query rows as fast as all heads
    at once (8,192 tokens: 1.52 s per layer either way), while blocks of a few hundred query rows
    lose 10-25% to its smaller tiles. Rows are split only when one head is over the budget.
    """
    per_head = group.count * group.longest * group.longest / heads  # all-head pairs one head costs
    if per_head * heads <= max_pairs:
        return heads, group.longest
    if per_head <= max_pairs:
        return int(max_pairs // per_head), group.longest
    rows = int(max_pairs * heads // (group.count * group.longest))
    return 1, max(min_rows, rows - rows % 16)


def _blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                       block_heads: int, block_rows: int):
    """``_attention`` over blocks of heads and query rows; yields after each block, returns the output.

    Keys and values are made contiguous once (the fused kernel would copy them on every call).
    No (length x length) score matrix exists at any time: the fused kernel tiles each block.
    """
    k, v = k.contiguous(), v.contiguous()
    out = q.new_empty(q.shape)
    for first in range(0, q.shape[1], block_heads):
        heads = slice(first, first + block_heads)
        for start in range(0, q.shape[2], block_rows):
            rows = slice(start, start + block_rows)
            out[:, heads, rows] = F.scaled_dot_product_attention(q[:, heads, rows], k[:, heads], v[:, heads],
                                                                 attn_mask=mask)
            yield
    return out


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention of (n, heads, length, head_dim) tensors; ``mask`` (n, 1, 1, length) marks real keys.

    torch's fused CPU kernel is tiled for long sequences; on several short ones (queries) it spends
    more on its setup than on arithmetic, and two batched products are faster (8 sequences of 14
    tokens: 0.25 ms against 0.48 ms per layer; 6 of 40 with padding: 0.48 against 0.71 ms). From ~60
    tokens on the fused kernel wins (3 padded sequences of 128: 1.6 against 4.4 ms), hence
    ``_PLAIN_ATTENTION_LENGTH``.
    """
    n, length = q.shape[0], q.shape[2]
    if n == 1 or length > _PLAIN_ATTENTION_LENGTH:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = torch.matmul(q, k.transpose(-1, -2)).mul_(q.shape[-1] ** -0.5)
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    return torch.matmul(_softmax(scores).to(v.dtype), v)


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension, in float32.

    torch's CPU softmax is ~8x slower over fewer than 16 values than over 16 (8 queries x 12 heads x 13 keys:
    97 us against 12 us), so short rows are padded to 16 with -inf, which adds nothing to any sum.
    """
    keys = scores.shape[-1]
    if keys >= _SOFTMAX_WIDTH:
        return scores.softmax(-1, dtype=torch.float32)
    padded = scores.new_full((*scores.shape[:-1], _SOFTMAX_WIDTH), float("-inf"), dtype=torch.float32)
    padded[..., :keys] = scores
    return padded.softmax(-1)[..., :keys]
