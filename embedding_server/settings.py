"""All configuration in one place: environment variables prefixed ``EMBED_``, CLI flags override."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .durations import keep_alive_seconds


def split_list(value: str) -> list[str]:
    """The non-empty, stripped parts of a comma-separated setting."""
    return [part.strip() for part in value.split(",") if part.strip()]


class Settings(BaseSettings):
    """Service settings. Every field is read from ``EMBED_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="EMBED_", extra="ignore")

    models_dir: Path = Field(Path("./models"), description="Folder scanned at start; each subfolder is a model served under its folder name.")
    model: str = Field("all-minilm-l6-v2", description="Default model, loaded at start-up. Falls back to the embedded all-MiniLM-L6-v2 package when no folder has it.")
    model_aliases: str = Field("", description="Extra names for models, `alias=model,...` (e.g. `text-embedding-3-small=bge-m3`).")
    host: str = Field("127.0.0.1", description="Address to listen on (the container sets 0.0.0.0).")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    grpc_port: int | None = Field(None, ge=1, le=65535, description="Also serve TEI's gRPC API (package `tei.v1`: Info, Embed, Rerank, Tokenize, Predict, with the gRPC health service and reflection) on this TCP port of EMBED_HOST, in the same process as HTTP, sharing its models and batching; unset or empty = off (the container sets 50051). Needs `Authorization: Bearer <key>` metadata when EMBED_API_KEY is set.")
    pooling: Literal["auto", "mean", "cls", "lasttoken", "max", "weightedmean"] = Field("auto", description="Pooling override; `auto` uses the checkpoint's 1_Pooling/config.json, else mean.")
    token_ids: Literal["openai", "model", "reject"] = Field("openai", description="How OpenAI token-array inputs are read: cl100k_base ids (`openai`), the served model's own ids (`model`), or refused (`reject`).")
    dtype: Literal["float32", "bfloat16", "auto"] = Field("float32", description="Weights' dtype: `float32` (vectors equal sentence-transformers'), `bfloat16` (half the weight memory; on CPUs with native bf16, AVX-512 BF16 or AMX, about twice the speed; cosine to float32 vectors >= 0.9995; layer norms, softmax, pooling and normalisation stay float32), or `auto` (bfloat16 only where the CPU has native bf16). The log says which each model got and why.")
    model_dtypes: str = Field("", description="Per-model dtype overriding EMBED_DTYPE, `model=dtype,...` (e.g. `bge-m3=bfloat16,all-minilm-l6-v2=float32`).")
    cpu_features: Literal["detect", "avx2"] = Field("detect", description="Which of the CPU's optional features the server may choose kernels by: `detect` (all it has), or `avx2` (act as on an AVX2-only x86-64 CPU: no AVX-512, AMX or native bf16, so `auto` picks float32 and bfloat16 weights get no oneDNN blocked copies). The log says what was detected and chosen. For tests and for ruling out a CPU-specific kernel.")
    num_threads: int | None = Field(None, ge=1, description="Torch intra-op threads; unset = torch's default (the physical cores).")
    padding_free: bool = Field(True, description="Skip padding tokens in the dense layers of BERT/XLM-R-style models (checked against the transformers forward at load; `false` = always the transformers forward).")
    short_batch_copy_mb: int = Field(256, ge=0, description="With the padding-free forward, keep a second copy of a model's dense weights in oneDNN's blocked layout for passes of at most 128 tokens (single queries about 20% faster, batches of 8 queries about 15%) when those weights take at most this many MB (all-MiniLM-L6-v2: 42); 0 = never.")
    heap_trim_mb: int = Field(256, ge=0, description="While batches run, give the C allocator's (glibc) free memory back to the OS once resident memory has grown by more than this many MB since it last did; after 1 s without work, always. Lower saves memory and costs bulk throughput; 0 = never.")
    max_batch_tokens: int = Field(2048, ge=1, description="Token budget of one forward pass: the tokens it computes, i.e. padded length x batch size, or the real tokens for the padding-free forward (bounds how long a query can wait behind bulk work). An input longer than this still runs, alone.")
    slice_ms: int = Field(100, ge=1, description="With the padding-free forward, a batch runs in slices of about this many milliseconds, and waiting interactive requests (at most a quarter of max_batch_size inputs and 512 tokens) run between two slices: a query waits at most about one slice behind a long document or a bulk batch. Larger slices let bulk work run a little faster under a steady stream of queries; smaller ones answer queries sooner.")
    max_batch_size: int = Field(32, ge=1, description="Most inputs in one forward pass.")
    max_inputs: int = Field(2048, ge=1, description="Most inputs in one request.")
    max_request_tokens: int = Field(300_000, ge=1, description="Most tokens (after truncation) in one request.")
    max_rerank_documents: int = Field(1000, ge=1, description="Most documents in one rerank request.")
    auto_truncate: bool = Field(True, description="TEI API: cut inputs longer than the model's context when a request does not say `truncate` (TEI's `--auto-truncate`, on since TEI 1.9); `false` = such inputs get 422.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger gets 413.")
    max_queued_inputs: int = Field(16384, ge=1, description="Inputs waiting per model before new requests get 429 (OpenAI) / 503 (Ollama).")
    keep_alive: str = Field("5m", description="How long a model loaded on demand stays loaded after its last request (Ollama's default): a duration (`30s`, `5m`, `1h`), `0` (unload when idle) or negative (for ever). The default model stays loaded unless a request's `keep_alive` says otherwise.")
    max_loaded_models: int = Field(0, ge=0, description="Most models loaded at once; loading one more first unloads idle models, least recently used first (never the default model). 0 = no limit.")
    memory_limit_mb: int = Field(0, ge=0, description="Resident memory (MB) the process may reach by loading a model: a load that would exceed it first unloads idle models, least recently used first; if that is not enough the request is refused (503; OpenAI 429) with the model's estimated size. 0 = no limit.")
    request_timeout_s: float = Field(600.0, gt=0, description="Most seconds a request may take from arrival to answer, loading and queueing included; past it the request is answered with a timeout error (Ollama/OpenAI 504, TEI 503) and its queued work is dropped. Generous: one 8,192-token input to BGE-M3 takes about 65 s on 2 cores.")
    load_timeout_s: float = Field(600.0, gt=0, description="Most seconds a model load may take before its requests are refused (503): a stalled read (a hung network filesystem) then fails requests instead of hanging them. The load itself is left to finish, and the model is served if it does.")
    api_key: str = Field("", description="Comma-separated API keys; when set, embedding and model routes need `Authorization: Bearer <key>` or `X-API-Key: <key>`.")
    cors_origins: str = Field("", description="Comma-separated origins allowed by CORS; empty = CORS closed.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_inputs: bool = Field(False, description="Log input texts in access logs (debug only; off by default).")
    otlp_endpoint: str = Field("", description="OpenTelemetry collector to export traces to (TEI's `--otlp-endpoint`), e.g. `http://otel-collector:4317` (gRPC) or `http://otel-collector:4318/v1/traces` (HTTP); one span per request with child spans for queue wait, tokenization, forward passes and response, and the caller's W3C `traceparent` honoured. Empty = no tracing (nothing is imported or recorded).")
    otlp_protocol: Literal["grpc", "http/protobuf"] = Field("grpc", description="OTLP transport for EMBED_OTLP_ENDPOINT: `grpc` (port 4317 by convention, TEI's) or `http/protobuf` (port 4318; the endpoint is the full URL, `/v1/traces` included).")
    otlp_service_name: str = Field("embedding-server", description="The traces' `service.name` resource attribute.")

    @field_validator("grpc_port", mode="before")
    @classmethod
    def _empty_grpc_port(cls, value):
        return None if isinstance(value, str) and not value.strip() else value  # EMBED_GRPC_PORT= turns it off

    @field_validator("model_aliases")
    @classmethod
    def _check_aliases(cls, value: str) -> str:
        for pair in split_list(value):
            if pair.count("=") != 1 or not all(side.strip() for side in pair.split("=")):
                raise ValueError(f"alias {pair!r} is not of the form alias=model")
        return value

    @field_validator("keep_alive")
    @classmethod
    def _check_keep_alive(cls, value: str) -> str:
        keep_alive_seconds(value)
        return value

    @property
    def keep_alive_seconds(self) -> float:
        """EMBED_KEEP_ALIVE in seconds (``inf``: for ever)."""
        return keep_alive_seconds(self.keep_alive)

    @field_validator("model_dtypes")
    @classmethod
    def _check_model_dtypes(cls, value: str) -> str:
        for pair in split_list(value):
            model, _, dtype = pair.partition("=")
            if not model.strip() or dtype.strip() not in ("float32", "bfloat16", "auto"):
                raise ValueError(f"{pair!r} is not of the form model=float32|bfloat16|auto")
        return value

    def dtype_of(self, model: str) -> str:
        """The dtype asked for ``model``: its EMBED_MODEL_DTYPES entry, else EMBED_DTYPE."""
        chosen = dict(p.split("=", 1) for p in split_list(self.model_dtypes))
        return {k.strip(): v.strip() for k, v in chosen.items()}.get(model, self.dtype)

    @property
    def aliases(self) -> dict[str, str]:
        """Alias name -> served model name."""
        return dict((a.strip(), m.strip()) for a, m in (p.split("=") for p in split_list(self.model_aliases)))

    @property
    def api_keys(self) -> list[str]:
        return split_list(self.api_key)

    @property
    def cors_origin_list(self) -> list[str]:
        return split_list(self.cors_origins)


def unknown_environment(environ: dict[str, str]) -> list[str]:
    """``EMBED_*`` variables that name no setting (a typo such as EMBED_API_KEYS would otherwise be ignored)."""
    known = {f"EMBED_{name.upper()}" for name in Settings.model_fields}
    return sorted(k for k in environ if k.upper().startswith("EMBED_") and k.upper() not in known)
