"""EMBED_DTYPE / EMBED_MODEL_DTYPES through the app: the dtype each model got is what /api/show, /api/ps, TEI's /info
and /metrics report, and bf16 vectors stay close to float32's."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from pydantic import ValidationError

from embedding_server.settings import Settings
from tests.integration.api.test_observability_api import scrape


def test_per_model_dtypes_are_reported_everywhere(make_client, tiny_models_dir):
    client = make_client(models_dir=tiny_models_dir, model="tiny-bert", dtype="float32",
                         model_dtypes="tiny-bert=bfloat16")
    texts = ["the quick brown fox", "vector search engines"]
    bf16 = np.asarray(client.post("/api/embed", json={"model": "tiny-bert", "input": texts}).json()["embeddings"])
    fp32_engine_model = client.post("/api/embed", json={"model": "tiny-xlmr", "input": texts})
    assert fp32_engine_model.status_code == 200
    show = {name: client.post("/api/show", json={"model": name}).json()["details"]["quantization_level"]
            for name in ("tiny-bert", "tiny-xlmr")}
    assert show == {"tiny-bert": "BF16", "tiny-xlmr": "F32"}
    ps = {m["name"]: m["details"]["quantization_level"] for m in client.get("/api/ps").json()["models"]}
    assert ps == {"tiny-bert:latest": "BF16", "tiny-xlmr:latest": "F32"}
    assert client.get("/info").json()["model_dtype"] == "bfloat16"
    info = {(s.labels["model"], s.labels["dtype"]) for s in scrape(client)["embed_model_info"]}
    assert info == {("tiny-bert", "bfloat16"), ("tiny-xlmr", "float32")}
    reference = make_client(models_dir=tiny_models_dir, model="tiny-bert")  # float32 by default
    fp32 = np.asarray(reference.post("/api/embed", json={"model": "tiny-bert", "input": texts}).json()["embeddings"])
    assert (bf16 * fp32).sum(1).min() >= 0.999


def test_dtype_settings_are_checked():
    assert Settings(model_dtypes="a=bfloat16, b=auto").dtype_of("b") == "auto"
    assert Settings(dtype="auto").dtype_of("anything") == "auto"
    for bad in ("a=float16", "a", "=bfloat16"):
        with pytest.raises(ValidationError):
            Settings(model_dtypes=bad)
    with pytest.raises(ValidationError):
        Settings(dtype="float16")


def test_auto_and_bfloat16_on_each_kind_of_cpu(make_client, tiny_models_dir, cpu, caplog):
    """``auto`` is bfloat16 only with native bf16; ``bfloat16`` serves on any CPU (emulated, with a warning)."""
    auto = make_client(models_dir=tiny_models_dir, model="tiny-bert", dtype="auto", cpu_features=cpu.mode)
    want = "bfloat16" if cpu.native_bf16 else "float32"
    assert auto.get("/info").json()["model_dtype"] == want
    with caplog.at_level(logging.WARNING, logger="embedding_server.engine.engine"):
        bf16 = make_client(models_dir=tiny_models_dir, model="tiny-bert", dtype="bfloat16", cpu_features=cpu.mode)
    assert bf16.get("/info").json()["model_dtype"] == "bfloat16"
    assert ("emulated" in caplog.text) == (cpu.native_bf16 is None)
    texts = ["the quick brown fox", "vector search engines"]
    got = [np.asarray(c.post("/api/embed", json={"input": texts}).json()["embeddings"]) for c in (auto, bf16)]
    assert (got[0] * got[1]).sum(1).min() >= 0.999
