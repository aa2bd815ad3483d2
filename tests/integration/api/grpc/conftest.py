"""Apps serving TEI's gRPC API next to HTTP (in-process: the TestClient's loop runs the grpc.aio server), and
channels to them with the grpcio stubs generated from tei.proto."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from embedding_server.api.grpc import tei_pb2_grpc as pbg
from embedding_server.settings import Settings
from tests.conftest import open_client
from tests.support.checkpoints import make_tiny_bert, make_tiny_cross_encoder
from tests.support.server import free_port

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures"


class Served:
    """An app (``http``: its TestClient) with gRPC on ``port``; ``stub(name)``: a tei.v1 stub on one channel."""

    def __init__(self, settings: Settings):
        self.port = settings.grpc_port
        self.http = open_client(settings)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")

    def stub(self, service: str):
        return getattr(pbg, f"{service}Stub")(self.channel)

    def close(self) -> None:
        self.channel.close()
        self.http.__exit__(None, None, None)


@pytest.fixture(scope="session")
def grpc_models(tmp_path_factory) -> Path:
    """tiny-bert (mean pooling, prompts), the BGE-M3-shaped fixture (sparse and ColBERT heads), a tiny reranker."""
    root = tmp_path_factory.mktemp("grpc-models")
    make_tiny_bert(root / "tiny-bert", pooling="mean")
    (root / "tiny-bert" / "config_sentence_transformers.json").write_text(
        '{"prompts": {"query": "query: ", "passage": "passage: "}}')
    shutil.copytree(FIXTURES / "tiny-bge-m3", root / "tiny-bge-m3")
    make_tiny_cross_encoder(root / "tiny-reranker", "bert")
    return root


@pytest.fixture(scope="session")
def minilm(empty_models_dir):
    """The embedded all-MiniLM-L6-v2 as the default model, gRPC on a free port."""
    served = Served(Settings(models_dir=empty_models_dir, grpc_port=free_port()))
    yield served
    served.close()


@pytest.fixture
def serve():
    """Factory: ``serve(**settings)`` an app with gRPC on a free port; closed after the test."""
    opened = []

    def factory(**kwargs) -> Served:
        served = Served(Settings(grpc_port=free_port(), **kwargs))
        opened.append(served)
        return served

    yield factory
    for served in opened:
        served.close()
