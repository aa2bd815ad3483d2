"""Checkpoints whose sentence-transformers modules do more than pool: weighted-mean pooling and Dense projections
(LaBSE-style ``2_Dense``) are applied as sentence-transformers applies them; concatenated pooling modes are refused."""

from __future__ import annotations

import json

import pytest

from embedding_server.model.checkpoint import CheckpointError, inspect_checkpoint
from embedding_server.model.encoder import SentenceEncoder
from tests.support.checkpoints import make_tiny_bert

TEXTS = ["the quick brown fox", "vector search engines rank documents by cosine similarity " * 3, "a"]


def _st_folder(tmp_path, pooling: str, dense: list[tuple[int, bool, str]]):
    """A folder saved by sentence-transformers itself: tiny BERT, ``pooling``, Dense modules, Normalize."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.base.modules.dense import Dense
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    make_tiny_bert(tmp_path / "base", pooling=None)
    torch.manual_seed(3)
    modules, width = [Transformer(str(tmp_path / "base"), max_seq_length=32), Pooling(32, pooling)], 32
    for out_features, bias, activation in dense:
        modules.append(Dense(width, out_features, bias=bias, activation_function=getattr(torch.nn, activation)()))
        width = out_features
    model = SentenceTransformer(modules=[*modules, Normalize()], device="cpu")
    model.save(str(tmp_path / "st"))
    return tmp_path / "st", model


@pytest.mark.parametrize("padding_free", [True, False])
@pytest.mark.parametrize(("pooling", "dense"), [("weightedmean", []), ("mean", [(16, True, "Tanh")]),
                                                ("weightedmean", [(24, False, "Identity"), (8, True, "ReLU")])])
def test_vectors_equal_sentence_transformers(tmp_path, pooling, dense, padding_free):
    folder, reference = _st_folder(tmp_path, pooling, dense)
    encoder = SentenceEncoder(folder, padding_free=padding_free)
    assert encoder.pooling == pooling and encoder.details.dimension == (dense[-1][0] if dense else 32)
    ours = encoder.embed(encoder.tokenize(TEXTS))
    want = reference.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    assert ours.shape == want.shape and (ours * want).sum(1).min() >= 0.99999


def test_concatenated_pooling_modes_are_refused(tmp_path):
    folder, _ = _st_folder(tmp_path, "mean", [])
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    config["pooling_mode"] = ["mean", "max"]
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="concatenates several modes"):
        inspect_checkpoint(folder)


def test_an_activation_outside_torch_nn_is_refused(tmp_path):
    folder, _ = _st_folder(tmp_path, "mean", [(16, True, "Tanh")])
    config_path = folder / "2_Dense" / "config.json"
    config = json.loads(config_path.read_text())
    config["activation_function"] = "os.system"
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="Dense module"):
        SentenceEncoder(folder)
