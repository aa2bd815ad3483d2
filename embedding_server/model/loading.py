"""Reading a checkpoint folder: the tokenizer, the weights in the served dtype, and sentence-transformers' Dense
modules, each failure turned into one clear ``CheckpointError`` line."""

from __future__ import annotations

import logging
from pathlib import Path

from .checkpoint import CheckpointError, CheckpointInfo
from .file_weights import embedding_from_file
from .precision import DTYPES, keep_layer_norms_in_float32
from .st_dense import dense_folders, load_dense

log = logging.getLogger(__name__)


def quiet_transformers() -> None:
    """No progress bars or warnings from transformers in the server's log."""
    import transformers

    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def load_tokenizer(path: Path):
    """The folder's tokenizer (never from a hub)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - turned into one clear line
        raise CheckpointError(f"{path}: cannot load the tokenizer: {exc}") from None


def load_weights(path: Path, info: CheckpointInfo, dtype: str):
    """The folder's model in ``dtype`` (a sequence-classification model for a reranker), in eval mode. A low-precision
    model keeps its layer norms in float32 and reads its word embeddings from the checkpoint file."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    try:
        # ``dtype`` whatever the checkpoint stores (transformers 5 would otherwise keep e.g. float16 weights):
        # one copy of the weights, converted while loading.
        auto = AutoModelForSequenceClassification if info.task == "rerank" else AutoModel
        loaded = auto.from_pretrained(str(path), local_files_only=True, **{_dtype_argument(): DTYPES[dtype]}).eval()
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot load the weights: {exc}") from None
    if dtype != "float32":
        encoder = loaded.base_model if info.task == "rerank" else loaded
        keep_layer_norms_in_float32(encoder)
        saved = embedding_from_file(encoder, Path(path))
        if saved:
            log.info("%s: word embeddings read from the checkpoint file (%.0f MB of %s not kept)", path,
                     saved / 2**20, dtype)
    return loaded


def load_dense_modules(path: Path) -> list:
    """sentence-transformers' Dense modules after pooling (2_Dense/ ...), in order."""
    try:
        return [load_dense(folder) for folder in dense_folders(Path(path))]
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path}: cannot load a Dense module: {exc}") from None


def _dtype_argument() -> str:
    """``from_pretrained``'s name for the weights' dtype: ``dtype`` from transformers 4.56, ``torch_dtype`` before."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
