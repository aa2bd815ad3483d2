"""Cross-encoders (rerankers): a sequence-classification folder scores (query, document) pairs.

The encoder layers are the same as an embedding model's (padding-free, sliced, bf16 alike); the score is one
more head on the same last hidden states: the classifier on the first token's state (BERT: pooler, then a linear
layer; RoBERTa / XLM-RoBERTa: dense, tanh, linear). Scores are those of sentence-transformers'
``CrossEncoder.predict``: pairs tokenized together with ``longest_first`` truncation to the context, the
activation it would apply (sigmoid for one label unless the folder's config names another), or the raw logit.

A pair's two segments need token types (BERT's ``token_type_ids``: 0 for the query, 1 for the document). So that
pairs travel through the engine's queue and batches as plain id lists, a second-segment token is written as its
id plus the embedding matrix's row count (``with_types``); the forward splits them back (``split_types``).
"""

from __future__ import annotations

from copy import deepcopy
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError
from .file_weights import float32_tensors

# CrossEncoder's activations of the logits, in numpy (float32: what torch computes, without a torch call per request)
ACTIVATIONS = {"sigmoid": lambda x: (1.0 / (1.0 + np.exp(-x))).astype(np.float32),
               "identity": lambda x: x, "tanh": lambda x: np.tanh(x).astype(np.float32)}


def activate(name: str, logits: np.ndarray) -> np.ndarray:
    """The scores ``CrossEncoder.predict`` gives for ``logits`` with its activation ``name`` (see activation_of)."""
    with np.errstate(over="ignore"):  # exp(-x) of a very negative logit is inf: the score is then 0, as torch's
        return ACTIVATIONS[name](np.asarray(logits, np.float32))


def with_types(ids: list[int], types: list[int] | None, rows: int) -> list[int]:
    """Pair ids as the engine carries them: second-segment tokens offset by ``rows``."""
    if not types or not any(types):
        return list(ids)
    return [i + rows if t else i for i, t in zip(ids, types)]


def split_types(ids: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(token ids, token types or None when all are 0) of ids written by ``with_types``."""
    second = ids >= rows
    if not second.any():
        return ids, None
    return ids - rows * second, second.astype(np.int64)


def activation_of(path: str | None) -> str:
    """The activation ``CrossEncoder`` applies for a saved ``activation_fn`` path (None: its default, sigmoid)."""
    if path is None or not path.startswith("torch."):  # sentence-transformers ignores untrusted paths too
        return "sigmoid"
    name = path.rsplit(".", 1)[-1].lower()
    if name not in ACTIVATIONS:
        raise CheckpointError(f"the cross-encoder's activation {path} is not one this server applies "
                              f"({', '.join(sorted(ACTIVATIONS))})")
    return name


class ScoreHead:
    """The classifier of a ``*ForSequenceClassification`` model on first-token states: (n, hidden) -> (n,) logits,
    in float32."""

    def __init__(self, seq_model):
        classifier = getattr(seq_model, "classifier", None)
        if classifier is None:
            raise CheckpointError("the sequence classifier has no 'classifier' module")
        pooler = getattr(seq_model.base_model, "pooler", None)
        self.pooler = pooler if isinstance(classifier, torch.nn.Linear) else None  # BERT reads the pooled state
        if isinstance(classifier, torch.nn.Linear) and pooler is None:
            raise CheckpointError("a linear classifier without a pooler: not a head this server computes")
        self.classifier = classifier

    def __call__(self, first: torch.Tensor) -> torch.Tensor:
        states = first[:, None, :]  # both heads read position 0 of (batch, tokens, hidden)
        if self.pooler is not None:
            return self.classifier(self.pooler(states)).reshape(-1)
        return self.classifier(states).reshape(-1)

    def to_float32(self, seq_model, folder: Path) -> None:
        """Compute in float32 whatever the encoder's dtype, on copies of the head's (small) modules (the
        transformers forward of a bfloat16 encoder keeps running its own pooler), with the checkpoint file's own
        values where it has them (a bias of 10 rounded to bfloat16 is off by 0.03)."""
        names = {id(p): n for n, p in seq_model.named_parameters()}
        copies = []
        for attr in ("pooler", "classifier"):
            module = getattr(self, attr)
            if module is None or all(p.dtype == torch.float32 for p in module.parameters()):
                continue
            copy = deepcopy(module).float()
            copies += [(names[id(p)], q) for p, q in zip(module.parameters(), copy.parameters())]
            setattr(self, attr, copy)
        exact = float32_tensors(folder, [name for name, _ in copies]) if copies else {}
        for name, param in copies:
            if name in exact and exact[name].shape == param.shape:
                param.data.copy_(exact[name])

    def check(self, seq_model, batch: dict) -> None:
        """CheckpointError unless this head reproduces the model's own logits on ``batch`` (padded tensors)."""
        with torch.inference_mode():
            hidden = seq_model.base_model(**batch)[0]
            expected = seq_model(**batch).logits.reshape(-1).float()
            got = self(hidden[:, 0]).float()
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-4):
            raise CheckpointError("the classification head is not one this server computes "
                                  f"(its logits differ: {got.tolist()} vs {expected.tolist()})")
