"""A model folder carried to another path (shutil.copytree, as an operator would) serves identical vectors.

README: "A model folder is self-contained ... the folder's path does not matter: a copied folder serves
identical vectors." Compared bit for bit (np.array_equal), in both dialects, with base64 on the OpenAI side
so that not even a JSON float round trip stands between the two.

Bit-for-bit needs the same forward passes on both sides: the scheduler packs batches with a cost model
timed at load (a warm-up on a busy CPU gives another split), and a different batch composition moves the
last float bit (~1e-7). So the exact comparison runs with EMBED_MAX_BATCH_SIZE=1 (every input its own
forward pass), and the default batching is compared too, to float32 rounding.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedding_server.settings import Settings
from tests.conftest import open_client
from tests.integration.ops.ops_helpers import MINILM, TEXTS
from tests.support.checkpoints import make_tiny_bert, make_tiny_xlmr, minilm_path

pytestmark = pytest.mark.slow  # the real MiniLM served from two folders: left out of make test-fast

BATCHES = [TEXTS, TEXTS[:1], list(reversed(TEXTS))]


def _served(models_dir: Path, model: str) -> dict:
    """Vectors for every batch in BATCHES from fresh apps over ``models_dir``: exact and default batching."""
    exact = _vectors(models_dir, model, max_batch_size=1)
    exact["batched"] = _vectors(models_dir, model)["ollama"]
    return exact


def _vectors(models_dir: Path, model: str, **settings) -> dict:
    client = open_client(Settings(models_dir=models_dir, model=model, **settings))
    try:
        ollama, openai = [], []
        for texts in BATCHES:
            r = client.post("/api/embed", json={"model": model, "input": texts})
            assert r.status_code == 200, r.text
            ollama.append(np.asarray(r.json()["embeddings"], dtype=np.float32))
            r = client.post("/v1/embeddings", json={"model": model, "input": texts, "encoding_format": "base64"})
            assert r.status_code == 200, r.text
            rows = sorted(r.json()["data"], key=lambda d: d["index"])
            openai.append(np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in rows]))
        show = client.post("/api/show", json={"model": model})
        assert show.status_code == 200, show.text
        return {"ollama": ollama, "openai": openai, "info": show.json()["model_info"]}
    finally:
        client.__exit__(None, None, None)


def _assert_identical(a: dict, b: dict) -> None:
    assert a["info"] == b["info"]
    for dialect in ("ollama", "openai"):
        for i, (x, y) in enumerate(zip(a[dialect], b[dialect], strict=True)):
            assert x.shape == y.shape and x.shape[0] == len(BATCHES[i])
            assert np.array_equal(x, y), f"{dialect} batch {i}: max diff {np.abs(x - y).max()}"
    for x, y in zip(a["batched"], b["batched"], strict=True):
        assert np.allclose(x, y, rtol=0, atol=1e-6)


def _assert_same_files(src: Path, dst: Path) -> None:
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file())
    assert not [p for p in dst.rglob("*") if p.is_symlink()]  # a real copy, nothing pointing back
    for rel in files:
        assert (src / rel).read_bytes() == (dst / rel).read_bytes(), rel


@pytest.mark.parametrize("make", [make_tiny_bert, make_tiny_xlmr], ids=["tiny-bert", "tiny-xlmr"])
def test_copied_tiny_folder_serves_identical_vectors(make, tmp_path):
    name = make.__name__.replace("make_", "").replace("_", "-")
    original = make(tmp_path / "site-a" / "models" / name)
    before = _served(original.parent, name)

    copy = tmp_path / "usb-disk" / "srv" / "models" / name
    shutil.copytree(original, copy)
    _assert_same_files(original, copy)
    # The original is gone from its place: the copy cannot lean on anything left behind.
    original.rename(tmp_path / "site-a" / "moved-away")
    after = _served(copy.parent, name)
    _assert_identical(before, after)


@pytest.fixture(scope="module")
def embedded_minilm(empty_models_dir) -> dict:
    """The original: the embedded all-MiniLM-L6-v2 package (EMBED_MODELS_DIR without folders)."""
    return _served(empty_models_dir, MINILM)


def test_copied_minilm_folder_serves_identical_vectors(tmp_path, embedded_minilm):
    before = embedded_minilm

    # The operator's copy of the real folder, under a models dir, on a different path.
    copy = tmp_path / "air-gapped" / "models" / MINILM
    shutil.copytree(minilm_path(), copy)
    _assert_same_files(minilm_path(), copy)
    after = _served(copy.parent, MINILM)
    _assert_identical(before, after)
    assert before["ollama"][0].shape == (len(TEXTS), 384)


def test_copied_minilm_under_another_name_serves_identical_vectors(tmp_path, embedded_minilm):
    # Renaming the folder (e.g. to keep two revisions side by side) changes the name only.
    before = embedded_minilm
    copy = tmp_path / "models" / "minilm-2024-rev"
    shutil.copytree(minilm_path(), copy)
    after = _served(copy.parent, "minilm-2024-rev")
    _assert_identical(before, after)
