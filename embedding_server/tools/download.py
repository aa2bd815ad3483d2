"""Download a model from the Hugging Face hub into ``models/<name>/`` for offline serving.

Run through ``./download-model.sh`` (or ``python -m embedding_server.tools.download``).
Only the files serving needs are fetched: config/tokenizer JSON, tokenizer vocabularies,
sentence-transformers module folders (``1_Pooling/`` ...) and the weights, as safetensors
when the repo has them (``pytorch_model*.bin`` otherwise), and BGE-M3's extra heads
(``sparse_linear.pt``, ``colbert_linear.pt``: its sparse and ColBERT outputs). ONNX/OpenVINO/CoreML
exports, TF/Flax/Rust weights, training state and images are skipped.

``HF_ENDPOINT`` (a mirror) and ``HF_TOKEN`` (gated/private repos) are read by
huggingface_hub itself: this tool never passes an endpoint or a token, so they apply as set.
This module is a separate tool: the serving code must not import it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path, PurePosixPath

SHORT_NAMES = {
    "bge-m3": "BAAI/bge-m3",
    "all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "bge-reranker-v2-m3": "BAAI/bge-reranker-v2-m3",  # rerankers (cross-encoders) for the rerank routes
    "ms-marco-minilm-l6-v2": "cross-encoder/ms-marco-MiniLM-L-6-v2",
}

# Hub rule: letters, digits, '-', '_', '.'; no '--' or '..'; no leading/trailing '-' or '.'.
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"^{_NAME}/{_NAME}$")
# sentence-transformers module folders listed in modules.json: 1_Pooling, 2_Dense, 2_Normalize...
_MODULE_DIR = re.compile(r"^\d+_[A-Za-z]\w*$")
_KEEP_NAMES = {"vocab.txt", "merges.txt", "README.md", "LICENSE", "LICENSE.txt", "LICENSE.md", "NOTICE",
               "sparse_linear.pt", "colbert_linear.pt"}  # BGE-M3's sparse and ColBERT heads
_KEEP_SUFFIXES = (".json", ".safetensors", ".model", ".tiktoken")
_BIN_WEIGHTS = re.compile(r"^pytorch_model(?:-\d+-of-\d+)?\.bin(?:\.index\.json)?$")


def resolve_target(arg: str) -> tuple[str, str]:
    """Map a short name or ``<org>/<repo>`` to ``(repo_id, folder_name)``; ValueError if invalid."""
    key = arg.strip().lower()
    if key in SHORT_NAMES:
        return SHORT_NAMES[key], key
    if not _REPO_ID.match(arg) or "--" in arg or ".." in arg:
        known = ", ".join(SHORT_NAMES)
        raise ValueError(f"{arg!r} is neither a known model ({known}) nor a hub repo id <org>/<repo>")
    return arg, arg.split("/", 1)[1].lower()


def _is_servable(path: str) -> bool:
    parts = PurePosixPath(path).parts
    if len(parts) > 2 or (len(parts) == 2 and not _MODULE_DIR.match(parts[0])):
        return False  # onnx/, openvino/, coreml/, imgs/, checkpoints... are not served
    name = parts[-1]
    return name in _KEEP_NAMES or name.endswith(_KEEP_SUFFIXES) or bool(_BIN_WEIGHTS.match(name))


def select_files(repo_files: list[str]) -> list[str]:
    """Return (sorted) the files of a repo listing that serving needs.

    Keeps root-level and ``<n>_<Module>/`` files that are JSON, safetensors, tokenizer
    vocabularies (``*.model``, ``vocab.txt``, ``merges.txt``, ``*.tiktoken``), README/LICENSE,
    BGE-M3's head files, and ``pytorch_model*.bin`` only in folders that have no ``*.safetensors``.
    """
    kept = [f for f in repo_files if _is_servable(f)]
    with_safetensors = {str(PurePosixPath(f).parent) for f in kept if f.endswith(".safetensors")}
    return sorted(
        f
        for f in kept
        if not (_BIN_WEIGHTS.match(PurePosixPath(f).name) and str(PurePosixPath(f).parent) in with_safetensors)
    )


def _missing(files: list[str]) -> list[str]:
    """What a servable checkpoint needs at its root and ``files`` lacks."""
    root = [f for f in files if "/" not in f]
    needs = {
        "config.json": "config.json" in root,
        "weights": any(f.endswith((".safetensors", ".bin")) for f in root),
        "tokenizer": any(f in ("tokenizer.json", "vocab.txt", "vocab.json") or f.endswith(".model") for f in root),
    }
    return [name for name, present in needs.items() if not present]


def _literal(path: str) -> str:
    """Escape fnmatch metacharacters: allow_patterns are globs, we want exact paths."""
    return re.sub(r"([*?\[])", r"[\1]", path)


def _models_dir() -> str:
    return os.environ.get("EMBED_MODELS_DIR") or "models"


def _target(arg: str) -> tuple[str, str]:
    try:
        return resolve_target(arg)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _revision(arg: str) -> str:
    if not arg.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return arg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="download-model.sh",
        description="Download an embedding model from the Hugging Face hub into <dest>/<name>/ "
        "(only the files serving needs).",
        epilog="Short names: "
        + ", ".join(f"{k} -> {v}" for k, v in SHORT_NAMES.items())
        + "; any other <org>/<repo> goes to <dest>/<repo lowercased>. "
        "HF_ENDPOINT (hub mirror) and HF_TOKEN (gated/private repos) are honoured as set "
        "in the environment.",
    )
    parser.add_argument(
        "model", type=_target, metavar="MODEL", help="bge-m3 | all-minilm-l6-v2 | <org>/<repo> (hub repo id)"
    )
    parser.add_argument("--revision", type=_revision, default=None, help="branch, tag or commit (default: main)")
    parser.add_argument(
        "--dest",
        default=None,
        metavar="DIR",
        help="models directory (default: $EMBED_MODELS_DIR or ./models)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 on success, 1 on hub/download failure, 2 on bad arguments."""
    args = build_parser().parse_args(argv)
    repo_id, folder = args.model
    dest = Path(args.dest or _models_dir())
    local_dir = dest / folder
    at = f"{repo_id}@{args.revision or 'main'}"
    try:
        # Imported late so that --help and argument errors work without huggingface_hub.
        # No endpoint/token arguments: huggingface_hub reads HF_ENDPOINT and HF_TOKEN itself.
        from huggingface_hub import HfApi, constants, snapshot_download
    except ImportError:
        print("error: huggingface_hub is not installed (run `make install`)", file=sys.stderr)
        return 1
    print(f"Listing {at} on {constants.ENDPOINT} ...", flush=True)
    try:
        repo_files = HfApi().list_repo_files(repo_id, revision=args.revision)
    except Exception as exc:  # noqa: BLE001 - any hub/network error is reported the same way
        print(f"error: cannot list {at}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    selected = select_files(list(repo_files))
    if _missing(selected):
        print(f"error: {at} is not servable, it lacks: {', '.join(_missing(selected))}", file=sys.stderr)
        return 1
    skipped = len(repo_files) - len(selected)
    print(f"Downloading {len(selected)} files ({skipped} not needed for serving skipped) to {local_dir} ...")
    try:
        path = snapshot_download(
            repo_id,
            revision=args.revision,
            local_dir=str(local_dir),
            allow_patterns=[_literal(f) for f in selected],
        )
    except Exception as exc:  # noqa: BLE001
        print(f"error: download of {at} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    where = Path(path).resolve()
    # snapshot_download falls back to what is already on disk when the hub drops mid-way.
    missing = [f for f in selected if not (where / f).is_file()]
    if missing:
        print(f"error: download of {at} incomplete, missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    env = "" if where.parent == Path("models").resolve() else f"EMBED_MODELS_DIR={shlex.quote(str(where.parent))} "
    print(f"Done: {repo_id} is in {where}")
    print("Serve it with:")
    print(f"  {env}EMBED_MODEL={folder} make run")
    print(f"  {env}embedding-server serve --model {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
