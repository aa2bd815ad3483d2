"""Outputs computed from one forward's last hidden states: the heads a batch asks for.

Every head works on the same hidden states, so requests that want different outputs share a batch
and its single forward pass:

- ``dense``: the pooled vector of each sequence (before L2 normalisation, which the engine applies
  per request);
- ``tokens``: the last hidden state of every token of each sequence (TEI's ``/embed_all``).
"""

from __future__ import annotations

import torch

from .pooling import pool, pool_packed

DENSE = "dense"
TOKENS = "tokens"
HEADS = (DENSE, TOKENS)
ONLY_DENSE = frozenset({DENSE})


def packed_outputs(hidden: torch.Tensor, lengths: list[int], heads: frozenset[str], pooling: str) -> dict:
    """Heads of packed hidden states (sum of lengths, dim), sequences back to back in batch order."""
    out: dict = {}
    if DENSE in heads:
        out[DENSE] = pool_packed(hidden, lengths, pooling).float().numpy()
    if TOKENS in heads:
        out[TOKENS] = [part.float().numpy() for part in hidden.split(lengths)]
    return out


def padded_outputs(hidden: torch.Tensor, mask: torch.Tensor, heads: frozenset[str], pooling: str) -> dict:
    """Heads of right-padded hidden states (batch, longest, dim) under the boolean ``mask`` of real tokens."""
    out: dict = {}
    if DENSE in heads:
        out[DENSE] = pool(hidden, mask.long(), pooling).float().numpy()
    if TOKENS in heads:
        lengths = mask.sum(1).tolist()
        out[TOKENS] = [hidden[row, :n].float().numpy() for row, n in enumerate(lengths)]
    return out
