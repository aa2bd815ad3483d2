"""Our vectors equal sentence-transformers' ``encode(normalize_embeddings=True)`` for the same folder.

Checked on the genuine all-MiniLM-L6-v2 and on generated tiny BERT (mean) and XLM-R (CLS,
like BGE-M3) checkpoints, for texts sent alone and in mixed-length batches.
"""

from __future__ import annotations

import numpy as np
import pytest

from embedding_server.model.encoder import SentenceEncoder
from embedding_server.settings import Settings

pytestmark = pytest.mark.slow  # sentence-transformers on the real MiniLM: left out of make test-fast

TEXTS = [
    "hello",
    "The quick brown fox jumps over the lazy dog.",
    "Vector search engines rank documents by cosine similarity between dense embeddings of queries and passages. " * 3,
    "Air-gapped networks have no internet access at all, so models must be carried in on disk.",
    "Ünïcödé, emoji 🚀 and 中文 text, plus RTL: مرحبا بالعالم",
    "retrieval " * 400,  # longer than every context here: truncated the same way
    "   spaces   around   ",
]

MIN_COSINE = 0.99999


@pytest.fixture(scope="module", params=["minilm", "tiny-bert", "tiny-xlmr"])
def folder(request, minilm_dir, tiny_models_dir):
    return minilm_dir if request.param == "minilm" else tiny_models_dir / request.param


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# The server's forward (padding-free, with short-batch weight copies), the padding-free one alone, and the
# transformers forward.
FORWARDS = {"server-default": dict(short_batch_copy_mb=Settings().short_batch_copy_mb),
            "padding-free": dict(short_batch_copy_mb=0), "transformers": dict(padding_free=False)}


@pytest.mark.parametrize("forward", FORWARDS)
def test_batch_and_single_match_sentence_transformers(folder, forward):
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(
        TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    encoder = SentenceEncoder(folder, **FORWARDS[forward])
    assert encoder.padding_free == (forward != "transformers")
    assert encoder.forward_kind.endswith("short-batch weight copies") == (forward == "server-default")

    batched = encoder.embed(encoder.tokenize(TEXTS))
    alone = np.vstack([encoder.embed(encoder.tokenize([t])) for t in TEXTS])

    for ours in (batched, alone):
        cos = _cosines(ours, reference)
        assert cos.min() >= MIN_COSINE, f"worst cosine {cos.min():.8f} for {TEXTS[int(cos.argmin())]!r:.60}"
    assert np.allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-5)


def test_minilm_context_and_pooling_follow_its_files(minilm_dir):
    encoder = SentenceEncoder(minilm_dir)
    assert encoder.context_length == 256  # sentence_bert_config.json
    assert encoder.pooling == "mean"  # 1_Pooling/config.json
    assert encoder.details.dimension == 384


def test_the_sliced_forward_matches_sentence_transformers(folder):
    """The forward the worker runs in slices, cut into the smallest units (dense chunks of 512 tokens, attention
    in blocks of heads and rows), gives sentence-transformers' vectors too."""
    from sentence_transformers import SentenceTransformer

    texts = TEXTS * 4  # > 512 tokens in all: several dense chunks
    reference = SentenceTransformer(str(folder), device="cpu", local_files_only=True).encode(
        texts, normalize_embeddings=True, convert_to_numpy=True)
    encoder = SentenceEncoder(folder)
    encoder.warm_up()
    job = encoder.start(encoder.tokenize(texts), unit_ms=1e-6)
    while not job.run(0.0):
        pass
    assert job.slices > len(encoder._packed.layers) * 3  # really cut: several units per layer
    cos = _cosines(job.result["dense"], reference)
    assert cos.min() >= MIN_COSINE, f"worst cosine {cos.min():.8f} for {texts[int(cos.argmin())]!r:.60}"
