"""The Ray Data stage (indexing/ray_stage.py) as Ray calls it, one batch at a time, without a cluster: its vectors
equal the API's for the same texts (dense against /api/embed, BGE-M3's sparse and ColBERT against /api/encode), every
other column is kept, each batch kind gives the same, rows that cannot be embedded are reported and skipped (or fail
the batch when strict), and a models folder in an object store is copied once per node."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from embedding_server.indexing.ray_stage import Embedder, RowError, stage_models
from embedding_server.settings import Settings
from tests.conftest import open_client
from tests.support.ray_cluster import ray_test_models

TEXTS = [f"document {i} about {'vector search engines' if i % 3 else 'air gapped networks'} and the lazy dog"
         for i in range(37)]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    return ray_test_models(tmp_path_factory.mktemp("stage-models"))


@pytest.fixture(scope="module")
def bge(models):
    stage = Embedder(model="tiny-bge-m3", models_dir=str(models), outputs=["dense", "sparse", "colbert"],
                     id_column="id")
    yield stage
    stage.close()


@pytest.fixture(scope="module")
def api(models):
    client = open_client(Settings(models_dir=models, model="tiny-bge-m3"))
    yield client
    client.__exit__(None, None, None)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_outputs_equal_the_apis_and_other_columns_are_kept(bge, api, models):
    table = pa.table({"id": [f"d{i}" for i in range(len(TEXTS))], "text": TEXTS, "year": list(range(len(TEXTS)))})
    out = bge(table)
    assert out.column_names == ["id", "text", "year", "embedding", "sparse_indices", "sparse_values", "colbert"]
    assert out.column("id").to_pylist() == table.column("id").to_pylist()
    assert out.column("year").to_pylist() == table.column("year").to_pylist()
    assert out.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    dense = np.array(out.column("embedding").to_pylist(), np.float32)
    want = np.array(api.post("/api/embed", json={"model": "tiny-bge-m3", "input": TEXTS}).json()["embeddings"])
    assert cosines(dense, want).min() >= 0.99999 and np.abs(dense - want).max() < 1e-5
    encoded = api.post("/api/encode", json={"model": "tiny-bge-m3", "input": TEXTS,
                                            "outputs": ["sparse", "colbert"]}).json()
    for row, (sparse, colbert) in enumerate(zip(encoded["sparse"], encoded["colbert"])):
        assert out.column("sparse_indices")[row].as_py() == sparse["indices"]
        np.testing.assert_allclose(out.column("sparse_values")[row].as_py(), sparse["values"], atol=1e-5)
        np.testing.assert_allclose(np.array(out.column("colbert")[row].as_py()), np.array(colbert), atol=1e-5)

    minilm_like = Embedder(model="tiny-bert", models_dir=str(models), num_threads=1)
    try:
        vectors = np.array(minilm_like(pa.table({"text": TEXTS})).column("embedding").to_pylist(), np.float32)
    finally:
        minilm_like.close()
    want = np.array(api.post("/api/embed", json={"model": "tiny-bert", "input": TEXTS}).json()["embeddings"])
    assert cosines(vectors, want).min() >= 0.99999


def test_every_batch_kind_gives_the_same(bge):
    ids = np.array([f"d{i}" for i in range(len(TEXTS))])
    arrow = np.array(bge(pa.table({"id": ids, "text": TEXTS})).column("embedding").to_pylist(), np.float32)
    numpy = bge({"id": ids, "text": np.array(TEXTS, dtype=object)})
    assert numpy["embedding"].shape == arrow.shape and np.abs(numpy["embedding"] - arrow).max() == 0
    assert list(numpy["id"]) == list(ids)
    frame = bge(pd.DataFrame({"id": ids, "text": TEXTS}))
    assert list(frame.columns) == ["id", "text", "embedding", "sparse_indices", "sparse_values", "colbert"]
    assert np.abs(np.stack(frame["embedding"].to_list()) - arrow).max() == 0
    assert list(frame["id"]) == list(ids)


def test_rows_that_cannot_be_embedded_are_reported_and_skipped(bge, caplog):
    batch = {"id": np.array(["a", "b", "c", "d", "e"]),
             "text": np.array(["first text", "", "bad \ud800 text", None, "last text"], dtype=object)}
    with caplog.at_level(logging.WARNING, logger="embedding_server.indexing.ray"):
        out = bge(batch)
    assert list(out["id"]) == ["a", "e"] and out["embedding"].shape[0] == 2
    assert len(out["sparse_indices"]) == 2 and len(out["colbert"]) == 2
    logged = caplog.text
    assert "row b skipped: has no text in column 'text'" in logged
    assert "row c skipped: cannot be embedded: its text is not valid Unicode text" in logged
    assert "row d skipped" in logged
    alone = bge({"id": np.array(["a", "e"]), "text": np.array(["first text", "last text"], dtype=object)})
    assert np.abs(alone["embedding"] - out["embedding"]).max() < 1e-6  # the good rows as if the bad were absent


def test_strict_fails_the_batch_naming_the_row(models):
    stage = Embedder(model="tiny-bert", models_dir=str(models), id_column="id", strict=True, num_threads=1)
    try:
        with pytest.raises(RowError, match=r"row b has no text in column 'text' \(strict\)"):
            stage(pa.table({"id": ["a", "b"], "text": ["fine", "  "]}))
        with pytest.raises(RowError, match="row x cannot be embedded: its text is not valid Unicode"):
            stage({"id": np.array(["x"]), "text": np.array(["\udfff"], dtype=object)})
        assert stage(pa.table({"id": ["a"], "text": ["fine"]})).num_rows == 1
        with pytest.raises(ValueError, match=r"no column 'text' \(columns: id, body\)"):
            stage(pa.table({"id": ["a"], "body": ["x"]}))
    finally:
        stage.close()


def test_arguments_are_checked_before_loading(models):
    with pytest.raises(ValueError, match="outputs must be some of dense, sparse, colbert"):
        Embedder(model="tiny-bert", models_dir=str(models), outputs=["dense", "lexical"])
    with pytest.raises(ValueError, match="not settings: max_batch"):
        Embedder(model="tiny-bert", models_dir=str(models), settings={"max_batch": 3})


def test_a_models_folder_in_an_object_store_is_copied_once_per_node(models, tmp_path):
    uri = f"file://{models}"
    results = []
    threads = [threading.Thread(target=lambda: results.append(stage_models(uri, "tiny-bert", tmp_path / "cache")))
               for _ in range(3)]  # three actors of one node starting together
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(copied for _, copied in results) == [False, False, True]
    local = Path(results[0][0])
    assert {p.name for p in local.iterdir() if not p.name.startswith(".")} == {"tiny-bert"}
    assert sorted(p.name for p in (local / "tiny-bert").rglob("*")) == \
        sorted(p.name for p in (models / "tiny-bert").rglob("*"))
    assert stage_models(uri, "tiny-bert", tmp_path / "cache") == (str(local), False)
    assert stage_models(str(models), "tiny-bert") == (str(models), False)  # a shared path: used in place
    stage = Embedder(model="tiny-bert", models_dir=uri, cache_dir=str(tmp_path / "cache"), num_threads=1)
    try:
        assert stage.settings.models_dir == local and stage(pa.table({"text": ["a text"]})).num_rows == 1
    finally:
        stage.close()
