"""Outputs computed from one forward's last hidden states: the heads a batch asks for.

Every head works on the same hidden states, so requests that want different outputs share a batch
and its single forward pass:

- ``dense``: the pooled vector of each sequence (before L2 normalisation, which the engine applies
  per request);
- ``tokens``: the last hidden state of every token of each sequence (TEI's ``/embed_all``);
- ``sparse``: BGE-M3's lexical weights, ``relu(sparse_linear(h))`` per token, the maximum per token id,
  without the CLS, EOS, PAD and UNK ids and weights <= 0 (as FlagEmbedding's ``BGEM3FlagModel``);
- ``colbert``: BGE-M3's multi-vectors, ``colbert_linear(h)`` of every token after CLS (EOS included),
  each L2-normalised;
- ``score``: a cross-encoder's logit, its classifier on the first token's state (``reranker.ScoreHead``).

The last two need the model folder's ``sparse_linear.pt`` / ``colbert_linear.pt`` (``ExtraHeads``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .pooling import pool, pool_packed

DENSE, TOKENS, SPARSE, COLBERT, SCORE = "dense", "tokens", "sparse", "colbert", "score"
HEADS = (DENSE, TOKENS, SPARSE, COLBERT, SCORE)
ONLY_DENSE = frozenset({DENSE})
HEAD_FILES = {SPARSE: "sparse_linear.pt", COLBERT: "colbert_linear.pt"}


@dataclass
class ExtraHeads:
    """BGE-M3's sparse and ColBERT heads (each None when its file is absent), and the ids sparse drops."""

    sparse: torch.nn.Linear | None
    colbert: torch.nn.Linear | None
    unused_ids: frozenset[int]

    @property
    def names(self) -> frozenset[str]:
        return frozenset(name for name, head in ((SPARSE, self.sparse), (COLBERT, self.colbert)) if head is not None)

    @classmethod
    def load(cls, folder: Path, hidden: int, tokenizer) -> ExtraHeads | None:
        """The heads found in ``folder`` (state dicts, loaded with ``weights_only=True``), None if neither is."""
        heads = {name: _linear(folder / file, hidden) for name, file in HEAD_FILES.items() if (folder / file).is_file()}
        if not heads:
            return None
        unused = {getattr(tokenizer, f"{kind}_token_id", None) for kind in ("cls", "eos", "pad", "unk")}
        return cls(heads.get(SPARSE), heads.get(COLBERT), frozenset(i for i in unused if i is not None))


def _linear(path: Path, hidden: int) -> torch.nn.Linear:
    state = torch.load(path, map_location="cpu", weights_only=True)
    weight, bias = state["weight"].float(), state.get("bias")
    if weight.ndim != 2 or weight.shape[1] != hidden:
        raise ValueError(f"{path.name}: weight of shape {tuple(weight.shape)} does not take hidden size {hidden}")
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data.copy_(weight)
    if bias is not None:
        layer.bias.data.copy_(bias.float())
    return layer.eval().requires_grad_(False)


def packed_outputs(hidden: torch.Tensor, batch: list[list[int]], heads: frozenset[str], pooling: str,
                   extra: ExtraHeads | None = None, project: torch.nn.Module | None = None, score=None) -> dict:
    """Heads of packed hidden states (sum of lengths, dim), sequences back to back in ``batch`` order.

    ``project`` (the checkpoint's sentence-transformers Dense modules) is applied to the pooled vectors;
    ``score`` (a cross-encoder's classifier) maps first-token states to logits."""
    lengths = [len(ids) for ids in batch]
    out: dict = {}
    if SCORE in heads:
        out[SCORE] = score(pool_packed(hidden, lengths, "cls").float()).float().numpy()
    if DENSE in heads:
        out[DENSE] = _projected(pool_packed(hidden, lengths, pooling), project)
    if TOKENS in heads:
        out[TOKENS] = [part.float().numpy() for part in hidden.split(lengths)]
    if SPARSE in heads:
        weights = torch.relu(extra.sparse(hidden)).squeeze(-1).float().numpy()
        ids = np.fromiter((t for seq in batch for t in seq), dtype=np.int64, count=len(weights))
        starts = np.cumsum([0, *lengths])
        out[SPARSE] = [_lexical(ids[a:b], weights[a:b], extra.unused_ids) for a, b in zip(starts[:-1], starts[1:])]
    if COLBERT in heads:
        vectors = torch.nn.functional.normalize(extra.colbert(hidden), dim=-1).float().numpy()
        starts = np.cumsum([0, *lengths])
        out[COLBERT] = [vectors[a + 1:b] for a, b in zip(starts[:-1], starts[1:])]  # all but CLS
    return out


def padded_outputs(hidden: torch.Tensor, mask: torch.Tensor, batch: list[list[int]], heads: frozenset[str],
                   pooling: str, extra: ExtraHeads | None = None, project: torch.nn.Module | None = None,
                   score=None) -> dict:
    """Heads of right-padded hidden states (batch, longest, dim) under the boolean ``mask`` of real tokens."""
    out = packed_outputs(hidden[mask], batch, heads - {DENSE}, pooling, extra, score=score)
    if DENSE in heads:
        out[DENSE] = _projected(pool(hidden, mask.long(), pooling), project)
    return out


def _projected(pooled: torch.Tensor, project: torch.nn.Module | None) -> np.ndarray:
    return (pooled if project is None else project(pooled)).float().numpy()


def _lexical(ids: np.ndarray, weights: np.ndarray, unused: frozenset[int]) -> tuple[np.ndarray, np.ndarray]:
    """(token ids ascending, their weights): the maximum weight per id, without ``unused`` ids or weights <= 0."""
    keep = (weights > 0) & ~np.isin(ids, list(unused))
    ids, weights = ids[keep], weights[keep]
    if not len(ids):
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    unique, inverse = np.unique(ids, return_inverse=True)
    best = np.zeros(len(unique), np.float32)
    np.maximum.at(best, inverse, weights)
    return unique, best
