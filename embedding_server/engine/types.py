"""The internal request and result every API dialect converts to and from."""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np


@dataclass
class EmbedRequest:
    """One embedding request, whichever dialect it came in.

    ``inputs`` holds texts, or token-id lists when ``token_ids`` is set; how ids are read
    (OpenAI's cl100k_base, the model's own vocabulary, or refused) is the engine's setting.
    """

    model: str
    inputs: list[str] | list[list[int]]
    truncate: bool = True
    dimensions: int | None = None
    token_ids: bool = False


@dataclass
class EmbedResult:
    """Vectors in input order, token counts, and timings in nanoseconds."""

    model: str
    embeddings: np.ndarray  # (n_inputs, dim) float32, C-contiguous, L2-normalised
    token_counts: list[int] = field(default_factory=list)
    load_ns: int = 0

    @property
    def prompt_tokens(self) -> int:
        """Tokens fed to the model, special tokens included, over all inputs."""
        return int(sum(self.token_counts))
