"""The transformers forward on a right-padded batch: the reference the padding-free forward is checked
against, and the forward of models that cannot take the padding-free one."""

from __future__ import annotations

import numpy as np
import torch

from .reranker import split_types


def standard_forward(model, ids: torch.Tensor, mask: torch.Tensor, wants_token_types: bool) -> torch.Tensor:
    """The transformers forward's last hidden state (batch, longest, hidden) for ``pad_batch`` output."""
    ids, types = split_types(ids.numpy(), model.get_input_embeddings().num_embeddings)  # a reranker's pairs
    ids = torch.from_numpy(ids)
    inputs = {"input_ids": ids, "attention_mask": mask.long()}
    if wants_token_types:
        inputs["token_type_ids"] = torch.zeros_like(ids) if types is None else torch.from_numpy(types)
    return model(**inputs).last_hidden_state


def pad_batch(batch: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (batch, longest) ids and the boolean mask of real tokens."""
    longest = max(len(ids) for ids in batch)
    ids = np.full((len(batch), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), longest), dtype=np.bool_)
    for row, seq in enumerate(batch):
        ids[row, :len(seq)] = seq
        mask[row, :len(seq)] = True
    return torch.from_numpy(ids), torch.from_numpy(mask)
