"""BGE-M3's dense, sparse and ColBERT outputs equal FlagEmbedding's ``BGEM3FlagModel`` (recorded on a generated tiny
checkpoint by tests/support/flag_reference.py), from one forward, alone and in mixed batches, on both forwards."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from embedding_server.model.checkpoint import CheckpointError
from embedding_server.model.encoder import SentenceEncoder
from embedding_server.model.heads import COLBERT, DENSE, SPARSE, TOKENS

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
FOLDER = FIXTURES / "tiny-bge-m3"
REFERENCE = json.loads((FIXTURES / "tiny-bge-m3.flagembedding.json").read_text())
ALL = frozenset({DENSE, SPARSE, COLBERT})


def outputs(encoder: SentenceEncoder, texts: list[str], heads=ALL) -> dict:
    job = encoder.start(encoder.tokenize(texts), heads=heads)
    job.run()
    return job.result


def assert_matches_reference(result: dict, indices: list[int]) -> None:
    if DENSE in result:
        dense = result[DENSE] / np.linalg.norm(result[DENSE], axis=1, keepdims=True)
        assert (dense * np.asarray(REFERENCE["dense"])[indices]).sum(1).min() >= 0.99999
    for row, i in enumerate(indices):
        if SPARSE in result:
            ids, weights = result[SPARSE][row]
            ours, want = {str(k): float(w) for k, w in zip(ids, weights)}, REFERENCE["sparse"][i]
            assert set(ours) == set(want), (i, ours, want)
            assert all(abs(ours[k] - want[k]) <= 1e-5 for k in want)
        if COLBERT in result:
            want = np.asarray(REFERENCE["colbert"][i])
            assert result[COLBERT][row].shape == want.shape
            assert (result[COLBERT][row] * want).sum(1).min() >= 0.99999


@pytest.fixture(scope="module", params=[True, False], ids=["padding-free", "transformers"])
def m3(request) -> SentenceEncoder:
    encoder = SentenceEncoder(FOLDER, padding_free=request.param)
    assert encoder.padding_free == request.param and encoder.outputs == {DENSE, TOKENS, SPARSE, COLBERT}
    return encoder


def test_all_three_outputs_in_one_batch_equal_flagembedding(m3):
    assert m3.context_length == REFERENCE["max_length"]
    assert_matches_reference(outputs(m3, REFERENCE["texts"]), list(range(len(REFERENCE["texts"]))))


def test_each_text_alone_and_any_subset_of_outputs(m3):
    for i, text in enumerate(REFERENCE["texts"]):
        assert_matches_reference(outputs(m3, [text]), [i])
    only_sparse = outputs(m3, REFERENCE["texts"][:3], frozenset({SPARSE}))
    assert set(only_sparse) == {SPARSE}
    assert_matches_reference(only_sparse, [0, 1, 2])


def test_sliced_forward_gives_the_same_outputs():
    encoder = SentenceEncoder(FOLDER)
    encoder.warm_up()
    job = encoder.start(encoder.tokenize(REFERENCE["texts"]), unit_ms=1e-6, heads=ALL)
    while not job.run(0.0):
        pass
    assert job.slices > 4
    assert_matches_reference(job.result, list(range(len(REFERENCE["texts"]))))


def test_flagembeddings_scores_computed_from_our_outputs_equal_its_own(m3):
    result = outputs(m3, REFERENCE["texts"][:3])
    lexical = [dict(zip(ids.tolist(), weights.tolist())) for ids, weights in result[SPARSE]]
    for i in range(3):
        for j in range(3):
            score = sum(w * lexical[j][k] for k, w in lexical[i].items() if k in lexical[j])
            assert score == pytest.approx(REFERENCE["lexical_matching_scores"][i][j], rel=1e-5)
            q, p = result[COLBERT][i], result[COLBERT][j]
            assert float((q @ p.T).max(1).sum() / len(q)) == pytest.approx(REFERENCE["colbert_scores"][i][j],
                                                                          rel=1e-5)


def test_a_folder_without_head_files_offers_only_dense_and_tokens(tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(FOLDER, partial)
    (partial / "colbert_linear.pt").unlink()
    assert SentenceEncoder(partial).outputs == {DENSE, TOKENS, SPARSE}
    (partial / "sparse_linear.pt").unlink()
    encoder = SentenceEncoder(partial)
    assert encoder.outputs == {DENSE, TOKENS} and encoder.extra is None


class NotAWeight:
    """Anything but tensors in a head file is refused: heads load with ``weights_only=True``."""


def test_head_files_load_tensors_only(tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(FOLDER, folder)
    torch.save({"weight": torch.zeros(1, 32), "bias": torch.zeros(1), "extra": NotAWeight()},
               folder / "sparse_linear.pt")
    with pytest.raises(CheckpointError, match="sparse_linear.pt|head file"):
        SentenceEncoder(folder)
