"""finish_dense: the vectors a request gets (first ``dimensions`` components, L2-normalised unless asked not to),
bit for bit what numpy's own norm gives, so that a faster path changes no response byte."""

from __future__ import annotations

import numpy as np
import pytest

from embedding_server.engine.pipeline import finish_dense


@pytest.mark.parametrize("shape", [(1, 384), (8, 384), (3, 1024), (2, 7)])
@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3])
def test_normalised_vectors_equal_numpys_norm_bit_for_bit(shape, scale):
    vectors = (np.random.default_rng(shape[0] * shape[1]).standard_normal(shape) * scale).astype(np.float32)
    expected = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    out = finish_dense(vectors, None, True)
    assert out.dtype == np.float32 and out.tobytes() == expected.tobytes()


def test_dimensions_then_normalise_and_the_raw_vectors_when_asked():
    vectors = np.arange(1, 13, dtype=np.float32).reshape(2, 6)
    cut = finish_dense(vectors, 3, True)
    assert cut.shape == (2, 3) and np.allclose(np.linalg.norm(cut, axis=1), 1.0)
    assert np.allclose(cut[0], vectors[0, :3] / np.linalg.norm(vectors[0, :3]))
    assert finish_dense(vectors, None, False) is vectors
    assert np.array_equal(finish_dense(np.zeros((1, 4), np.float32), None, True), np.zeros((1, 4)))  # no NaN
