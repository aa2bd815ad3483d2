"""float32_base64 and json_response: exact float32 round trips."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from embedding_server.api.responses import float32_base64, json_response


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def test_base64_round_trip_is_bit_exact():
    rng = np.random.default_rng(0)
    v = rng.standard_normal(384).astype(np.float32)
    v[:6] = [0.0, -0.0, 1e-45, np.finfo(np.float32).max, -np.finfo(np.float32).tiny, 0.1]
    out = _decode(float32_base64(v))
    assert out.shape == v.shape
    np.testing.assert_array_equal(out.view(np.uint32), v.view(np.uint32))


def test_base64_length_and_alphabet():
    text = float32_base64(np.ones(3, dtype=np.float32))
    assert text == base64.b64encode(np.ones(3, dtype="<f4").tobytes()).decode()
    assert text.isascii() and len(base64.b64decode(text)) == 12


def test_base64_known_value():
    # 1.0f is 0x3f800000, little-endian bytes 00 00 80 3f.
    assert base64.b64decode(float32_base64(np.array([1.0], dtype=np.float32))) == b"\x00\x00\x80\x3f"


@pytest.mark.parametrize("dtype", [np.float64, ">f4", np.float16])
def test_base64_converts_to_little_endian_float32(dtype):
    v = np.array([0.5, -2.25, 3.0], dtype=dtype)
    np.testing.assert_array_equal(_decode(float32_base64(v)), np.array([0.5, -2.25, 3.0], dtype=np.float32))


def test_base64_of_matrix_row_and_slice():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(_decode(float32_base64(m[1])), m[1])
    np.testing.assert_array_equal(_decode(float32_base64(m[:, 1])), m[:, 1])  # non-contiguous


def test_json_response_float32_matrix():
    rng = np.random.default_rng(1)
    m = rng.standard_normal((5, 32)).astype(np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    response = json_response({"embeddings": m})
    parsed = json.loads(response.body)["embeddings"]
    reference = json.loads(json.dumps([[float(x) for x in row] for row in m]))
    assert np.array(parsed, dtype=np.float32).shape == m.shape
    # Same float32 numbers as the float() of each element, read back at float32 precision.
    np.testing.assert_array_equal(np.array(parsed, dtype=np.float32), np.array(reference, dtype=np.float32))
    np.testing.assert_array_equal(np.array(parsed, dtype=np.float32), m)


def test_json_response_float32_special_values():
    v = np.array([0.0, -0.0, 1e-40, 3.4e38, 0.1], dtype=np.float32)
    parsed = json.loads(json_response(v).body)
    np.testing.assert_array_equal(np.array(parsed, dtype=np.float32).view(np.uint32), v.view(np.uint32))


def test_json_response_float32_row():
    m = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
    assert np.array(json.loads(json_response({"embedding": m[0]}).body)["embedding"], dtype=np.float32).tolist() \
        == m[0].tolist()


def test_json_response_status_headers_and_type():
    r = json_response({"a": [1, 2], "b": None, "c": "é"}, 418, {"X-Test": "yes"})
    assert r.status_code == 418
    assert r.headers["x-test"] == "yes"
    assert r.media_type == "application/json"
    assert json.loads(r.body) == {"a": [1, 2], "b": None, "c": "é"}


def test_json_response_numpy_scalars_and_ints():
    r = json_response({"n": np.int64(3), "f": np.float32(0.5), "ids": np.array([1, 2], dtype=np.int32)})
    assert json.loads(r.body) == {"n": 3, "f": 0.5, "ids": [1, 2]}
