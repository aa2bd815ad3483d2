"""Model descriptions in the shapes Ollama's /api/tags, /api/show, /api/ps and OpenAI's /v1/models use, from the
engine's ``ModelFacts`` (read off the event loop; nothing here touches a model)."""

from __future__ import annotations

import datetime as dt

from ..engine.engine import Engine
from ..engine.errors import ModelUnavailable
from ..engine.facts import ModelFacts
from ..engine.types import HEAD_FILES

_FAR_FUTURE = "2318-01-01T00:00:00Z"  # a model kept for ever (the default model, keep_alive < 0), as Ollama shows it


def _human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat().replace("+00:00", "Z")


# Ollama's quantization_level names for the dtypes weights are served in.
_QUANTIZATION_LEVELS = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _details(f: ModelFacts) -> dict:
    return {"parent_model": "", "format": "safetensors", "family": f.architecture, "families": [f.architecture],
            "parameter_size": _human_count(f.parameters),
            "quantization_level": _QUANTIZATION_LEVELS.get(f.dtype, f.dtype.upper())}


def kind_of(f: ModelFacts) -> str:
    """"reranker" for a cross-encoder folder, else "embedding" (listed with every model: ours, not Ollama's)."""
    return "reranker" if f.task == "rerank" else "embedding"


def _tag(f: ModelFacts) -> dict:
    name = f"{f.name}:latest"
    return {"name": name, "model": name, "modified_at": _iso(f.modified), "size": f.size,
            "digest": f.digest, "details": _details(f), "kind": kind_of(f)}


async def describe_all(engine: Engine) -> list[dict]:
    """Ollama /api/tags entries for every servable model."""
    return [_tag(f) for f in await engine.all_facts()]


async def describe_loaded(engine: Engine) -> list[dict]:
    """Ollama /api/ps entries for models resident in memory."""
    out = []
    for f in await engine.all_facts():
        if f.loaded:
            expires = _FAR_FUTURE if f.expires_at is None else _iso(f.expires_at)
            out.append({**_tag(f), "size": f.resident_bytes or f.size, "expires_at": expires,
                        "size_vram": 0, "context_length": f.context_length})
    return sorted(out, key=lambda m: m["name"])


async def describe_one(engine: Engine, name: str) -> dict:
    """Ollama /api/show for one model (ModelNotFound if the name resolves to nothing)."""
    entry = engine.registry.resolve(name)
    if entry.error:  # left out of /api/tags: not described as if it worked either
        raise ModelUnavailable(f"model '{entry.name}' cannot be loaded; the server log says why")
    f = await engine.facts(entry.name)
    arch = f.architecture
    info = {"general.architecture": arch, "general.parameter_count": f.parameters,
            f"{arch}.embedding_length": f.dimension, f"{arch}.context_length": f.context_length}
    if f.pooling:
        info[f"{arch}.pooling_type"] = f.pooling
    return {"license": "", "modelfile": "", "parameters": "", "template": "", "details": _details(f),
            "model_info": info, "capabilities": (["rerank"] if f.task == "rerank"
                                                 else ["embedding", *sorted(f.outputs & set(HEAD_FILES))]),
            "modified_at": _iso(f.modified)}


async def openai_models(engine: Engine) -> list[dict]:
    """OpenAI /v1/models entries: every servable model and every alias that reaches one."""
    facts = {f.name: f for f in await engine.all_facts()}
    out = [{"id": f.name, "object": "model", "created": int(f.modified), "owned_by": "embedding-server",
            "kind": kind_of(f)} for f in facts.values()]
    for alias, target in engine.registry.aliases.items():
        if target in facts:
            out.append({"id": alias, "object": "model", "created": int(facts[target].modified),
                        "owned_by": "embedding-server", "kind": kind_of(facts[target])})
    return out


async def kinds(engine: Engine) -> list[dict]:
    """Every servable model and its kind (TEI's /info lists them: TEI serves one model, this server several)."""
    return [{"model_id": f.name, "kind": kind_of(f)} for f in await engine.all_facts()]
