"""Inspecting a local checkpoint folder: what it holds and how it wants to be pooled."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .pooling import POOLING_MODES

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json")


class CheckpointError(Exception):
    """A model folder cannot be served; the message names the folder and what is wrong."""


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint folder declares about itself."""

    path: Path
    pooling: str | None  # from 1_Pooling/config.json, None when absent
    max_seq_length: int | None  # from sentence_bert_config.json, None when absent
    architecture: str  # config.json model_type, e.g. "bert", "xlm-roberta"
    do_lower_case: bool = False  # sentence_bert_config.json asks to lowercase inputs
    prompts: dict[str, str] = field(default_factory=dict)  # config_sentence_transformers.json, e.g. {"query": "query: "}
    task: str = "embed"  # "rerank" for a sequence-classification folder (a cross-encoder)
    activation: str | None = None  # a cross-encoder's sentence-transformers activation_fn (dotted path), if saved


def _task(config: dict, path: Path) -> str:
    """"rerank" when config.json names a sequence-classification architecture (one label), else "embed"."""
    if not any(str(a).endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return "embed"
    labels = config.get("num_labels") or len(config.get("id2label") or {}) or 1
    if labels != 1:
        raise CheckpointError(f"{path}: a sequence classifier with {labels} labels; a reranker has one")
    return "rerank"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path.parent}: cannot read {path.name}: {exc}") from None


def _check_safetensors(path: Path) -> None:
    """Header and size consistency of a .safetensors file (truncated or garbled files fail here)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len <= 0 or 8 + header_len > size:
                raise ValueError("header length out of range")
            header = json.loads(f.read(header_len))
        ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
        if not ends or max(ends) != size - 8 - header_len:
            raise ValueError("tensor data does not match the file size")
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise CheckpointError(f"{path.parent}: corrupt weights file {path.name} ({exc})") from None


_LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "lasttoken", "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len", "pooling_mode_mean_tokens": "mean",
    "pooling_mode_weightedmean_tokens": "weightedmean",
}


def _pooling_from_st_config(cfg: dict, where: Path) -> str | None:
    """sentence-transformers' pooling mode as one of ours; CheckpointError for concatenated modes."""
    raw = cfg.get("pooling_mode")
    if raw:
        modes = [raw] if isinstance(raw, str) else list(raw)
        modes = [str(m).replace("_tokens", "").replace("_token", "") for m in modes]
    else:
        modes = [mode for key, mode in _LEGACY_POOLING_FLAGS.items() if cfg.get(key)]
    if len(modes) > 1:
        raise CheckpointError(f"{where}: its pooling concatenates several modes ({', '.join(modes)}), which this "
                              "server does not do")
    return modes[0] if modes else None


def _pooling_dir(path: Path) -> Path | None:
    """The folder of the Pooling module: from modules.json when present, else 1_Pooling."""
    modules = path / "modules.json"
    if modules.is_file():
        for module in _read_json(modules):
            if str(module.get("type", "")).endswith("Pooling"):
                return path / module.get("path", "1_Pooling")
    default = path / "1_Pooling"
    return default if default.is_dir() else None


def inspect_checkpoint(path: Path) -> CheckpointInfo:
    """Check that ``path`` holds a servable checkpoint and read its pooling and length hints.

    Raises CheckpointError with one line naming the folder and what is missing.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: not a directory")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: missing config.json")
    config = _read_json(path / "config.json")
    if config.get("auto_map"):
        raise CheckpointError(f"{path}: needs trust_remote_code (config.json's auto_map names custom model code), "
                              "which this server never runs")
    if not any((path / f).is_file() for f in WEIGHT_FILES + WEIGHT_INDEXES):
        raise CheckpointError(f"{path}: missing weights (model.safetensors or pytorch_model.bin)")
    for weights in sorted(path.glob("*.safetensors")):
        _check_safetensors(weights)
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise CheckpointError(f"{path}: missing tokenizer files (tokenizer.json, vocab.txt or a sentencepiece model)")

    pooling = None
    pooling_dir = _pooling_dir(path)
    if pooling_dir is not None and (pooling_dir / "config.json").is_file():
        pooling = _pooling_from_st_config(_read_json(pooling_dir / "config.json"), path)
        if pooling is not None and pooling not in POOLING_MODES:
            raise CheckpointError(f"{path}: unsupported pooling mode {pooling!r} in {pooling_dir.name}/config.json")

    max_seq_length, do_lower_case = None, False
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        st = _read_json(st_config)
        max_seq_length = int(st["max_seq_length"]) if st.get("max_seq_length") else None
        do_lower_case = bool(st.get("do_lower_case", False))

    prompts: dict[str, str] = {}
    st_model_config = path / "config_sentence_transformers.json"
    if st_model_config.is_file():
        raw = _read_json(st_model_config).get("prompts") or {}
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise CheckpointError(f"{path}: 'prompts' in config_sentence_transformers.json is not a name -> text map")
        prompts = {str(k): v for k, v in raw.items()}

    st_section = config.get("sentence_transformers") or {}
    activation = st_section.get("activation_fn") or config.get("sbert_ce_default_activation_function")
    return CheckpointInfo(
        path=path,
        task=_task(config, path),
        activation=str(activation) if activation else None,
        pooling=pooling,
        max_seq_length=max_seq_length,
        architecture=str(config.get("model_type", "unknown")),
        do_lower_case=do_lower_case,
        prompts=prompts,
    )
