"""Model descriptions in the shapes Ollama's /api/tags, /api/show, /api/ps and OpenAI's /v1/models use."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from pathlib import Path

from ..engine.engine import Engine
from ..engine.errors import ModelUnavailable
from ..engine.registry import ModelEntry
from ..engine.types import HEAD_FILES

_FAR_FUTURE = "2318-01-01T00:00:00Z"  # a model kept for ever (the default model, keep_alive < 0), as Ollama shows it


@functools.lru_cache(maxsize=64)
def _folder_facts(path: Path) -> tuple[int, float, str]:
    """Total size, newest mtime and a stable digest (of names, sizes and mtimes) of a folder."""
    files = sorted(f for f in path.rglob("*") if f.is_file())
    digest = hashlib.sha256()
    size, newest = 0, 0.0
    for f in files:
        stat = f.stat()
        size += stat.st_size
        newest = max(newest, stat.st_mtime)
        digest.update(f"{f.relative_to(path)}:{stat.st_size}:{int(stat.st_mtime)}\n".encode())
    return size, newest, digest.hexdigest()


def _config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def _facts(entry: ModelEntry) -> dict:
    """Architecture, dimension, context length, parameters: exact when loaded, from config.json otherwise."""
    size, newest, digest = _folder_facts(entry.path)
    config = _config(entry.path)
    if entry.encoder is not None:
        d = entry.encoder.details
        arch, dim, ctx, params, pooling = d.architecture, d.dimension, d.context_length, d.parameters, d.pooling
        dtype = getattr(d, "dtype", "float32")
    else:
        arch = str(config.get("model_type", "unknown"))
        dim = int(config.get("hidden_size", 0))
        ctx = int(config.get("max_position_embeddings", 0))
        params, pooling, dtype = size // 4, None, "float32"  # loaded as float32 (see SentenceEncoder)
    return {"arch": arch, "dim": dim, "ctx": ctx, "params": params, "pooling": pooling, "dtype": dtype,
            "size": size, "modified": newest, "digest": digest}


# Ollama's quantization_level names for the dtypes weights are served in.
_QUANTIZATION_LEVELS = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


def _details(f: dict) -> dict:
    return {"parent_model": "", "format": "safetensors", "family": f["arch"], "families": [f["arch"]],
            "parameter_size": _human_count(f["params"]),
            "quantization_level": _QUANTIZATION_LEVELS.get(f["dtype"], f["dtype"].upper())}


def kind_of(entry: ModelEntry) -> str:
    """"reranker" for a cross-encoder folder, else "embedding" (listed with every model: ours, not Ollama's)."""
    return "reranker" if entry.task == "rerank" else "embedding"


def _tag(entry: ModelEntry, f: dict) -> dict:
    name = f"{entry.name}:latest"
    return {"name": name, "model": name, "modified_at": _iso(f["modified"]), "size": f["size"],
            "digest": f["digest"], "details": _details(f), "kind": kind_of(entry)}


def _servable(engine: Engine) -> list[ModelEntry]:
    return [e for e in engine.registry.entries.values() if not e.error]


def describe_all(engine: Engine) -> list[dict]:
    """Ollama /api/tags entries for every servable model."""
    return [_tag(e, _facts(e)) for e in _servable(engine)]


def describe_loaded(engine: Engine) -> list[dict]:
    """Ollama /api/ps entries for models resident in memory."""
    out = []
    for entry in engine.registry.entries.values():
        if entry.loaded:
            f = _facts(entry)
            expires = _FAR_FUTURE if entry.expires_at is None else _iso(entry.expires_at)
            out.append({**_tag(entry, f), "size": entry.resident_bytes or f["size"], "expires_at": expires,
                        "size_vram": 0, "context_length": f["ctx"]})
    return sorted(out, key=lambda m: m["name"])


def describe_one(engine: Engine, name: str) -> dict:
    """Ollama /api/show for one model (ModelNotFound if the name resolves to nothing)."""
    entry = engine.registry.resolve(name)
    if entry.error:  # left out of /api/tags: not described as if it worked either
        raise ModelUnavailable(f"model '{entry.name}' cannot be loaded; the server log says why")
    f = _facts(entry)
    arch = f["arch"]
    info = {"general.architecture": arch, "general.parameter_count": f["params"],
            f"{arch}.embedding_length": f["dim"], f"{arch}.context_length": f["ctx"]}
    if f["pooling"]:
        info[f"{arch}.pooling_type"] = f["pooling"]
    return {"license": "", "modelfile": "", "parameters": "", "template": "", "details": _details(f),
            "model_info": info, "capabilities": (["rerank"] if entry.task == "rerank"
                                                 else ["embedding", *sorted(_extra_outputs(entry))]),
            "modified_at": _iso(f["modified"])}


def _extra_outputs(entry: ModelEntry) -> set[str]:
    """BGE-M3's sparse / ColBERT outputs the model gives: from the loaded encoder, else from its head files."""
    if entry.encoder is not None:
        return set(getattr(entry.encoder, "outputs", ())) & set(HEAD_FILES)
    return {output for output, file in HEAD_FILES.items() if (entry.path / file).is_file()}


def openai_models(engine: Engine) -> list[dict]:
    """OpenAI /v1/models entries: every servable model and every alias that reaches one."""
    out = []
    for entry in _servable(engine):
        out.append({"id": entry.name, "object": "model", "created": int(_facts(entry)["modified"]),
                    "owned_by": "embedding-server", "kind": kind_of(entry)})
    for alias, target in engine.registry.aliases.items():
        if target in engine.registry.entries and not engine.registry.entries[target].error:
            created = int(_facts(engine.registry.entries[target])["modified"])
            out.append({"id": alias, "object": "model", "created": created, "owned_by": "embedding-server",
                        "kind": kind_of(engine.registry.entries[target])})
    return out


def kinds(engine: Engine) -> list[dict]:
    """Every servable model and its kind (TEI's /info lists them: TEI serves one model, this server several)."""
    return [{"model_id": e.name, "kind": kind_of(e)} for e in _servable(engine)]
