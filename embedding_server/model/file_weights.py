"""Weights read straight from the checkpoint file, for a model served in bfloat16.

- The word-embedding matrix is a lookup table, not a matrix product: converting it to bfloat16 gains no speed and
  makes it resident in full (BGE-M3: 250,002 x 1,024, 488 MB in bf16), though a text reads a few hundred of its
  rows. Left in the file's mapping (``FileBackedEmbedding``), only the rows read are resident, as clean file pages
  the kernel can drop and read again; read-ahead is turned off on it (``madvise(MADV_RANDOM)``), so a row costs a
  page or two, not the 128 KB+ read-ahead window. The rows keep the file's precision (float32 for BGE-M3).
- A cross-encoder's classifier (``float32_tensors``): a few KB, kept exact.
Only safetensors checkpoints (single file or sharded with an index); for anything else nothing changes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from .pages import no_read_ahead

log = logging.getLogger(__name__)

WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"


def _locations(folder: Path) -> dict[str, Path]:
    """Each tensor name of the folder's safetensors checkpoint -> its file ({} for other formats)."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / "model.safetensors"
    if not single.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(single), "pt") as f:
        return {name: single for name in f.keys()}


def _tensor(locations: dict[str, Path], suffix: str) -> torch.Tensor | None:
    """The one tensor whose name is ``suffix`` or ends in ``.suffix`` (file-mapped), or None."""
    names = [n for n in locations if n == suffix or n.endswith("." + suffix)]
    if len(names) != 1:
        return None
    from safetensors import safe_open

    with safe_open(str(locations[names[0]]), "pt") as f:
        return f.get_tensor(names[0])


def float32_tensors(folder: Path, suffixes: list[str]) -> dict[str, torch.Tensor]:
    """The named tensors of the checkpoint as float32 copies (those found)."""
    locations = _locations(folder)
    found = {s: _tensor(locations, s) for s in suffixes}
    return {s: t.float().clone() for s, t in found.items() if t is not None}


class FileBackedEmbedding(torch.nn.Module):
    """An ``nn.Embedding`` over a weight left in the checkpoint's file mapping; answers in ``out_dtype`` (the
    transformers forward adds it to the model's other embeddings), ``float_rows`` in float32."""

    def __init__(self, weight: torch.Tensor, out_dtype: torch.dtype, padding_idx: int | None):
        super().__init__()
        self.weight, self.out_dtype, self.padding_idx = weight, out_dtype, padding_idx
        self.num_embeddings, self.embedding_dim = weight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight).to(self.out_dtype)

    def float_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight).float()


def embedding_from_file(model: torch.nn.Module, folder: Path) -> int:
    """Replace a low-precision ``model``'s word embeddings by the checkpoint file's matrix (see the module doc);
    the bytes of converted weights given up (0 when the file has no such single tensor of the same shape)."""
    module = getattr(getattr(model, "embeddings", None), "word_embeddings", None)
    if not isinstance(module, torch.nn.Embedding):
        return 0
    try:
        weight = _tensor(_locations(Path(folder)), WORD_EMBEDDINGS)
    except Exception as exc:  # noqa: BLE001 - the converted copy stays
        log.info("word embeddings kept converted: %s", exc)
        return 0
    if weight is None or weight.shape != module.weight.shape or not weight.is_floating_point():
        return 0
    if weight.dtype == module.weight.dtype:
        return 0  # nothing to gain: transformers already serves it in that dtype
    no_read_ahead(weight)
    saved = module.weight.nbytes
    model.embeddings.word_embeddings = FileBackedEmbedding(weight, module.weight.dtype, module.padding_idx)
    return saved
