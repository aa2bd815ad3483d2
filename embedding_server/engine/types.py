"""The internal request and result every API dialect converts to and from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..model.heads import COLBERT, DENSE, HEAD_FILES, ONLY_DENSE, SCORE, SPARSE, TOKENS  # noqa: F401 - for the dialects


@dataclass
class EmbedRequest:
    """One embedding request, whichever dialect it came in.

    ``inputs`` holds texts, or token-id lists when ``token_ids`` is set; how ids are read
    (OpenAI's cl100k_base, the model's own vocabulary, or refused) is the engine's setting unless
    ``ids_mode`` says (``"model_full"``: whole model sequences, special tokens included, texts among them allowed).
    ``model`` None means the default model. ``outputs`` names the heads wanted (``DENSE``, ``TOKENS``, and
    for BGE-M3 folders ``SPARSE`` and ``COLBERT``), all computed from one forward.
    """

    model: str | None
    inputs: list[str] | list[list[int]]
    truncate: bool = True
    dimensions: int | None = None
    token_ids: bool = False
    normalize: bool = True  # L2-normalise dense vectors (after cutting them to ``dimensions``)
    outputs: frozenset[str] = ONLY_DENSE
    truncation_direction: Literal["right", "left"] = "right"  # which end of an over-long text is cut
    prompt_name: str | None = None  # a prompt of the model's config_sentence_transformers.json, put before each text
    ids_mode: Literal["openai", "model", "model_full", "reject"] | None = None  # None: the EMBED_TOKEN_IDS setting
    keep_alive: float | None = None  # seconds the model stays loaded once idle (inf: for ever); None: the default
    sparse_token_strings: bool = False  # SPARSE: also each entry's token string (the tokenizer's decode of its id)


@dataclass
class Forward:
    """One forward pass a request's inputs ran in (wall-clock nanoseconds, ``time.time_ns``)."""

    start_ns: int  # the batch's job began (its first slice)
    end_ns: int  # its outputs were ready
    batch_size: int  # inputs in the batch, all requests'
    batch_tokens: int  # their tokens
    inputs: int  # this request's inputs among them
    slices: int = 1


@dataclass
class Timeline:
    """Where one embedding request's time went inside the engine (wall-clock nanoseconds, ``time.time_ns``; 0:
    not reached). Recorded for every request at a few clock reads' cost; the tracing module turns it into spans."""

    started_ns: int = 0  # the engine took the request (before any model load)
    load_ns: int = 0  # of which waiting for its model to load
    tokenize_start_ns: int = 0
    tokenize_end_ns: int = 0
    queued_ns: int = 0  # its token ids were queued on the model's worker
    ready_ns: int = 0  # its result was complete (after the forwards' post-processing)
    inline: bool = True  # tokenized on the event loop (else on a tokenizer thread)
    forwards: list[Forward] = field(default_factory=list)

    def phases(self) -> dict[str, int]:
        """Nanoseconds spent tokenizing, waiting in the model's queue, and from the first forward pass to the
        result (TEI's tokenization, queue and inference times; 0 for a phase not reached)."""
        first = self.forwards[0].start_ns if self.forwards else 0
        end = self.ready_ns or (self.forwards[-1].end_ns if self.forwards else 0)
        return {"tokenize": max(0, self.tokenize_end_ns - self.tokenize_start_ns),
                "queue": max(0, first - self.queued_ns) if first and self.queued_ns else 0,
                "inference": max(0, end - first) if first and end else 0}


@dataclass
class EmbedResult:
    """Outputs in input order, token counts, and timings in nanoseconds."""

    model: str
    embeddings: np.ndarray  # (n_inputs, dim) float32, C-contiguous; L2-normalised unless the request said not to
    token_counts: list[int] = field(default_factory=list)
    load_ns: int = 0
    token_states: list[np.ndarray] | None = None  # TOKENS: (tokens, dim) float32 per input
    sparse: list[tuple[np.ndarray, np.ndarray]] | None = None  # SPARSE: (token ids ascending, weights) per input
    colbert: list[np.ndarray] | None = None  # COLBERT: (tokens - 1, dim) L2-normalised float32 per input
    sparse_strings: list[list[str]] | None = None  # with sparse_token_strings: the token of each sparse entry
    timeline: Timeline | None = None  # where the request's time went (None: not recorded)

    @property
    def timings(self) -> dict[str, int]:
        """The timeline's phases in nanoseconds (``Timeline.phases``; empty without a timeline)."""
        return self.timeline.phases() if self.timeline is not None else {}

    @property
    def prompt_tokens(self) -> int:
        """Tokens fed to the model, special tokens included, over all inputs."""
        return int(sum(self.token_counts))


@dataclass
class RerankRequest:
    """Score ``documents`` against ``query`` with a cross-encoder, whichever dialect asked. ``raw_scores``: the
    logits, else the model's activation of them (sigmoid: CrossEncoder.predict's scores)."""

    model: str | None
    query: str
    documents: list[str]
    truncate: bool = True
    truncation_direction: Literal["right", "left"] = "right"
    raw_scores: bool = False
    keep_alive: float | None = None  # as EmbedRequest's


@dataclass
class RerankResult:
    """One score per document, in the request's order (the dialects sort), and the pairs' token counts."""

    model: str
    scores: np.ndarray  # (n_documents,) float32
    token_counts: list[int] = field(default_factory=list)
    load_ns: int = 0
    timeline: Timeline | None = None  # as EmbedResult's

    timings = EmbedResult.timings

    @property
    def prompt_tokens(self) -> int:
        return int(sum(self.token_counts))
