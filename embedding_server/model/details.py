"""A loaded model's static facts: dimension, context length, pooling, size, dtype."""

from __future__ import annotations

from dataclasses import dataclass

from .checkpoint import CheckpointInfo

# Position-embedding slots RoBERTa-style models reserve before the first real position.
_ROBERTA_FAMILY = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl")


@dataclass(frozen=True)
class ModelDetails:
    """Static facts about a loaded model, for the model-listing endpoints."""

    architecture: str
    dimension: int
    context_length: int
    pooling: str
    parameters: int
    vocab_size: int  # the tokenizer's
    size_bytes: int
    embedding_rows: int = 0  # rows of the input embedding matrix: valid token ids are below this
    dtype: str = "float32"  # of the weights as served
    task: str = "embed"  # or "rerank" (a cross-encoder)


def context_length_of(info: CheckpointInfo, tokenizer, config) -> int:
    """max_seq_length from sentence-transformers, else the tokenizer's bound by the positions."""
    positions = getattr(config, "max_position_embeddings", None) or 512
    if info.architecture in _ROBERTA_FAMILY:
        pad = getattr(config, "pad_token_id", None)
        positions -= (1 if pad is None else pad) + 1
    if info.max_seq_length:
        return min(info.max_seq_length, positions)
    model_max = getattr(tokenizer, "model_max_length", None) or positions
    return int(min(model_max, positions))
