"""A loaded sentence-embedding model: tokenize, forward, pool, normalise.

The contract used by the engine: ``tokenize`` turns texts into token-id lists (special
tokens included, truncated to the context length), ``embed`` turns a batch of id lists
into L2-normalised float32 vectors. Both are synchronous and thread-compatible.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .calibration import calibrate, warm_up
from .checkpoint import CheckpointError, inspect_checkpoint
from .cpu import CpuFeatures
from .details import ModelDetails, context_length_of
from .heads import DENSE, ONLY_DENSE, SCORE, TOKENS, ExtraHeads, packed_outputs, padded_outputs
from .job import EmbedJob, one_step
from .loading import load_dense_modules, load_tokenizer, load_weights, quiet_transformers
from .packed import PackedEncoder
from .pooling import normalize
from .reranker import ScoreHead, activation_of, with_types
from .slicing import WHOLE, ForwardCost
from .standard import pad_batch, standard_forward
from .tokenization import InputTooLong, TextTokenizer, Token  # noqa: F401 - InputTooLong is part of this module's API

log = logging.getLogger(__name__)


class SentenceEncoder:
    """One checkpoint loaded for inference on the CPU."""

    def __init__(self, path: Path, pooling: str = "auto", num_threads: int | None = None,
                 padding_free: bool = True, short_batch_copy_mb: int = 0, dtype: str = "float32",
                 cpu: CpuFeatures | None = None):
        import torch

        quiet_transformers()
        if num_threads:
            torch.set_num_threads(num_threads)
        self.info = inspect_checkpoint(Path(path))
        started = time.perf_counter()
        self.tokenizer = load_tokenizer(path)
        loaded = load_weights(path, self.info, dtype)
        self.model = loaded.base_model if self.info.task == "rerank" else loaded  # the encoder layers
        self.load_seconds = time.perf_counter() - started

        self.pooling = (self.info.pooling or "mean") if pooling == "auto" else pooling
        self.context_length = context_length_of(self.info, self.tokenizer, self.model.config)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._wants_token_types = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ())
        self.score_head = self.activation = None  # a cross-encoder's classifier and CrossEncoder's activation
        if self.info.task == "rerank":
            try:
                self.score_head, self.activation = ScoreHead(loaded), activation_of(self.info.activation)
                self.score_head.check(loaded, self._probe_pairs())
            except CheckpointError as exc:
                raise CheckpointError(f"{path}: {exc}") from None
            self.score_head.to_float32(loaded, Path(path))
        self.text = TextTokenizer(self.tokenizer, self.context_length, self.info.do_lower_case)
        # Padding-free forward for BERT-style models (checked against the standard one), else None.
        self._packed = PackedEncoder.build(self.model, self._wants_token_types, self.pad_id,
                                           short_batch_copy_mb * 2**20, cpu) if padding_free else None
        try:  # BGE-M3's sparse / ColBERT heads, when the folder has them
            self.extra = ExtraHeads.load(Path(path), int(self.model.config.hidden_size), self.tokenizer)
        except Exception as exc:  # noqa: BLE001 - one clear line
            raise CheckpointError(f"{path}: cannot load a head file: {exc}") from None
        self.outputs = (frozenset({SCORE}) if self.score_head else
                        frozenset({DENSE, TOKENS}) | (self.extra.names if self.extra else frozenset()))
        dense = load_dense_modules(path)  # sentence-transformers Dense modules after pooling (2_Dense/ ...)
        self.project = torch.nn.Sequential(*dense) if dense else None
        self.cost: ForwardCost | None = None  # measured by warm_up() for the padding-free forward
        self.fallbacks = 0  # padding-free forwards that raised and were redone by the transformers forward
        self.details = ModelDetails(
            architecture=self.info.architecture,
            dimension=int(dense[-1][0].out_features if dense else self.model.config.hidden_size),
            context_length=self.context_length,
            pooling=self.pooling,
            parameters=sum(p.numel() for p in self.model.parameters()),
            vocab_size=len(self.tokenizer),
            size_bytes=sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()),
            embedding_rows=int(self.model.get_input_embeddings().num_embeddings),
            dtype=dtype,  # of the matrix products (word embeddings stay in the checkpoint's precision)
            task=self.info.task,
        )
        self._torch = torch

    def tokenize(self, texts: list[str], truncate: bool = True, direction: str | None = None,
                 prompt: str | None = None) -> list[list[int]]:
        """Token ids per text, special tokens included, cut to the context length (from ``direction``'s end;
        ``prompt`` put before each text). With ``truncate=False`` an over-long text raises InputTooLong instead.
        """
        return self.text.tokenize(texts, truncate, direction, prompt)

    def tokenize_pairs(self, query: str, documents: list[str], truncate: bool = True,
                       direction: str | None = None) -> list[list[int]]:
        """A cross-encoder's (query, document) pairs as the engine carries them (see ``reranker.with_types``):
        tokenized together, cut ``longest_first`` to the context (as ``CrossEncoder.predict``). With
        ``truncate=False`` an over-long pair raises InputTooLong instead."""
        rows = self.model.get_input_embeddings().num_embeddings
        types = self._wants_token_types
        return [with_types(ids, kinds if types else None, rows)
                for ids, kinds in self.text.pairs(query, documents, truncate, direction)]

    def _probe_pairs(self) -> dict:
        """A padded batch of two pairs, for checking the classifier head at load."""
        batch = self.tokenizer(["what is a probe?"] * 2, ["a probe", "a longer document about probes and tests"],
                               padding=True, return_tensors="pt")
        if not self._wants_token_types:
            batch.pop("token_type_ids", None)
        return dict(batch)

    @property
    def prompts(self) -> dict[str, str]:
        """The prompts of the folder's config_sentence_transformers.json, by name."""
        return self.info.prompts

    def with_special_tokens(self, ids: list[int], truncate: bool = True) -> list[int]:
        """Raw model-vocabulary ids wrapped in the model's special tokens, cut to the context length."""
        return self.text.with_special_tokens(ids, truncate)

    def tokens(self, text: str, add_special_tokens: bool = True, prompt: str | None = None) -> list[Token]:
        """Every token of ``prompt + text`` (untruncated) with its text, special flag and UTF-8 byte span."""
        return self.text.tokens(text, add_special_tokens, prompt)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        """The text of model token ids (unknown ids skipped)."""
        return self.text.decode(ids, skip_special_tokens)

    @property
    def _template(self) -> tuple[list[int], list[int]]:
        return self.text.template

    @property
    def _clip_chars(self) -> int:
        return self.text.clip_chars

    def warm_up(self) -> None:
        """One small and one large forward (the first calls pay one-off allocation costs); for the
        padding-free forward, then measure its per-layer costs (``cost``), which size its slices."""
        warm_up(self)

    def calibrate(self) -> tuple[float, float]:
        """Warm up and measure forward cost: (fixed overhead in ms, ms per padded token). The scheduler uses the
        ratio to decide when splitting a batch by length beats padding it."""
        return calibrate(self)

    @property
    def padding_free(self) -> bool:
        """True when forward passes skip padding tokens (then padding costs almost nothing)."""
        return self._packed is not None

    @property
    def forward_kind(self) -> str:
        """How forward passes run, for the load log line."""
        if self._packed is None:
            return "transformers forward"
        return "padding-free forward" + (" + short-batch weight copies" if self._packed.short_batch_copy else "")

    def embed(self, batch: list[list[int]]) -> np.ndarray:
        """L2-normalised float32 vectors, one row per id list, pooled under the padding mask."""
        job = self.start(batch)
        job.run()
        return normalize(self._torch.from_numpy(job.result[DENSE])).numpy()

    def start(self, batch: list[list[int]], unit_ms: float | None = None, heads: frozenset[str] = ONLY_DENSE) -> EmbedJob:
        """The forward of ``batch`` as a job whose result maps each of ``heads`` to its outputs (see ``heads``):
        with the padding-free forward and ``unit_ms``, in units of about that many milliseconds (see
        ``EmbedJob.run``); else in one unit. A padding-free forward that raises is redone with the transformers
        forward (``fallbacks`` counts it; the first is logged)."""
        lengths = [len(ids) for ids in batch]
        if self._packed is None or min(lengths) == 0:
            return EmbedJob(one_step(lambda: self._standard_outputs(batch, heads)))
        slicing = self.cost.slicing(unit_ms) if unit_ms and self.cost is not None else WHOLE
        return EmbedJob(self._packed_steps(batch, lengths, slicing, heads),
                        fallback=lambda: one_step(lambda: self._standard_outputs(batch, heads)),
                        on_fallback=self._note_fallback)

    def _packed_steps(self, batch: list[list[int]], lengths: list[int], slicing, heads: frozenset[str]):
        hidden = yield from self._packed.steps(batch, slicing)
        return packed_outputs(hidden, batch, heads, self.pooling, self.extra, self.project, self.score_head)

    def _standard_outputs(self, batch: list[list[int]], heads: frozenset[str]) -> dict:
        ids, mask = pad_batch(batch, self.pad_id)
        with self._torch.inference_mode():
            hidden = standard_forward(self.model, ids, mask, self._wants_token_types).float()
            return padded_outputs(hidden, mask, batch, heads, self.pooling, self.extra, self.project, self.score_head)

    def _note_fallback(self, reason: str) -> None:
        self.fallbacks += 1
        if self.fallbacks == 1:
            log.warning("padding-free forward failed (%s); that batch and any later failing one run on the "
                        "transformers forward", reason)
