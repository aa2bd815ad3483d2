"""Cross-encoders: scores equal sentence-transformers' CrossEncoder.predict (pairs, truncation, activation), on
the padding-free forward, the transformers forward and sliced, for BERT (token types) and XLM-R folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from embedding_server.model.checkpoint import CheckpointError, inspect_checkpoint
from embedding_server.model.encoder import InputTooLong, SentenceEncoder
from embedding_server.model.heads import SCORE
from embedding_server.model.reranker import activation_of, split_types, with_types
from tests.support.checkpoints import make_tiny_cross_encoder

QUERY = "what do embedding models map"
DOCS = ["embedding models map sentences to dense vectors", "the quick brown fox", "air gapped networks " * 60,
        "vector search " * 3, "ollama and openai clients send json requests over http"]


@pytest.fixture(scope="module", params=["bert", "xlmr"])
def folder(request, tmp_path_factory):
    return make_tiny_cross_encoder(tmp_path_factory.mktemp("ce") / f"ce-{request.param}", request.param)


def scores(encoder: SentenceEncoder, documents=DOCS, unit_ms=None) -> np.ndarray:
    job = encoder.start(encoder.tokenize_pairs(QUERY, documents), unit_ms, frozenset({SCORE}))
    while not job.run(0.0 if unit_ms else float("inf")):
        pass
    return job.result[SCORE]


def test_scores_equal_cross_encoder_predict(folder):
    from sentence_transformers import CrossEncoder

    reference = CrossEncoder(str(folder), device="cpu")
    encoder = SentenceEncoder(folder)
    assert inspect_checkpoint(folder).task == "rerank" and encoder.details.task == "rerank"
    assert encoder.forward_kind.startswith("padding-free") and encoder.outputs == frozenset({SCORE})
    ids = encoder.tokenize_pairs(QUERY, DOCS)
    assert max(map(len, ids)) == encoder.context_length  # the long document was cut (longest_first)
    logits = scores(encoder)
    pairs = [(QUERY, d) for d in DOCS]
    assert np.abs(torch.sigmoid(torch.from_numpy(logits)).numpy() - reference.predict(pairs)).max() <= 1e-5
    raw = reference.predict(pairs, activation_fn=torch.nn.Identity())
    assert np.abs(logits - raw).max() <= 1e-5
    assert np.ptp(raw) > 100 * 1e-5  # the documents' scores are far apart compared with the tolerance


def test_transformers_forward_and_slices_give_the_same_scores(folder):
    packed = SentenceEncoder(folder)
    packed.warm_up()
    standard = SentenceEncoder(folder, padding_free=False)
    whole = scores(packed)
    assert np.allclose(scores(standard), whole, atol=1e-5)
    assert np.allclose(scores(packed, unit_ms=0.01), whole, atol=1e-5)


def test_bfloat16_scores_are_no_further_from_float32_than_transformers_own(folder):
    """The fixture's logits are a scaled-up tiny spread, so bf16 rounding shows: compare with transformers' bf16."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    exact = scores(SentenceEncoder(folder))
    ours = np.abs(scores(SentenceEncoder(folder, dtype="bfloat16")) - exact).max()
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.bfloat16).eval()
    batch = AutoTokenizer.from_pretrained(folder)([QUERY] * len(DOCS), DOCS, padding=True, truncation=True,
                                                  max_length=128, return_tensors="pt")
    with torch.inference_mode():
        theirs = np.abs(model(**batch).logits.reshape(-1).float().numpy() - exact).max()
    assert ours <= max(theirs, 1e-3), (ours, theirs)


def test_pairs_carry_token_types_only_for_models_that_use_them(folder):
    encoder = SentenceEncoder(folder)
    rows = encoder.model.get_input_embeddings().num_embeddings
    ids = encoder.tokenize_pairs(QUERY, DOCS[:1])[0]
    _, types = split_types(np.array(ids), rows)
    family_has_types = (folder.name == "ce-bert")
    assert (types is not None) == family_has_types
    if family_has_types:  # [CLS] query [SEP] are type 0, then the document and its [SEP] type 1
        first_sep = ids.index(encoder.tokenizer.sep_token_id)
        assert types[:first_sep + 1].sum() == 0 and types[first_sep + 1:].all()


def test_truncate_false_refuses_an_over_long_pair(folder):
    encoder = SentenceEncoder(folder)
    with pytest.raises(InputTooLong):
        encoder.tokenize_pairs(QUERY, DOCS, truncate=False)
    assert len(encoder.tokenize_pairs(QUERY, DOCS[:2], truncate=False)) == 2


def test_with_types_round_trip():
    ids, types = [2, 5, 3, 7, 8, 3], [0, 0, 0, 1, 1, 1]
    carried = with_types(ids, types, rows=100)
    assert carried == [2, 5, 3, 107, 108, 103] and with_types(ids, None, 100) == ids
    back, kinds = split_types(np.array(carried), 100)
    assert back.tolist() == ids and kinds.tolist() == types


def test_activations_and_refused_folders(tmp_path):
    assert activation_of(None) == "sigmoid"
    assert activation_of("torch.nn.modules.linear.Identity") == "identity"
    assert activation_of("my_package.Custom") == "sigmoid"  # untrusted paths: CrossEncoder's default too
    with pytest.raises(CheckpointError, match="activation"):
        activation_of("torch.nn.modules.activation.Softmax")
    folder = make_tiny_cross_encoder(tmp_path / "ce", "bert", activation="torch.nn.modules.linear.Identity")
    assert SentenceEncoder(folder).activation == "identity"
    config = json.loads((folder / "config.json").read_text())
    config.update(num_labels=3, id2label={str(i): f"L{i}" for i in range(3)})
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="3 labels"):
        inspect_checkpoint(folder)
