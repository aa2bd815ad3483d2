"""Engine.embed tokenizes queries on the event loop and larger requests on the tokenizer threads."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from embedding_server.engine import inputs as inputs_module
from embedding_server.engine.engine import Engine
from embedding_server.engine.inputs import tokenize_inline
from embedding_server.engine.types import EmbedRequest
from embedding_server.settings import Settings


class ThreadNotingEncoder:
    """Tokenizes to one id per character and notes the thread that did it."""

    class details:  # noqa: N801 - mimics ModelDetails
        dimension = 3

    def __init__(self):
        self.tokenize_threads: list[str] = []

    def tokenize(self, texts, truncate=True, direction=None, prompt=None):
        self.tokenize_threads.append(threading.current_thread().name)
        return [[1] * max(1, len(t)) for t in texts]

    def embed(self, batch):
        return np.tile(np.array([1.0, 0.0, 0.0], np.float32), (len(batch), 1))


@pytest.fixture()
def engine(tmp_path):
    made = {}

    def factory(entry):
        made["encoder"] = ThreadNotingEncoder()
        return made["encoder"]

    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "config.json").write_text("{}")
    settings = Settings(models_dir=tmp_path, model="all-minilm-l6-v2")
    eng = Engine(settings, encoder_factory=factory)
    yield eng, made
    eng.stop(5)


def test_inline_threshold_counts_inputs_and_characters():
    small = EmbedRequest("m", ["a" * 100] * inputs_module.INLINE_INPUTS)
    assert tokenize_inline(small)
    assert not tokenize_inline(EmbedRequest("m", ["a"] * (inputs_module.INLINE_INPUTS + 1)))
    assert not tokenize_inline(EmbedRequest("m", ["a" * (inputs_module.INLINE_CHARS + 1)]))
    assert tokenize_inline(EmbedRequest("m", [[1, 2, 3]], token_ids=True))


def test_queries_on_the_loop_bulk_on_tokenizer_threads(engine):
    eng, made = engine

    async def go():
        loop_thread = threading.current_thread().name
        name = eng.default_entry().name
        await eng.load_default()
        query = await eng.embed(EmbedRequest(name, ["how do I reset my password"]))
        bulk = await eng.embed(EmbedRequest(name, ["text"] * 50))
        return loop_thread, query, bulk

    loop_thread, query, bulk = asyncio.run(go())
    assert made["encoder"].tokenize_threads[0] == loop_thread
    assert made["encoder"].tokenize_threads[1].startswith("tokenize")
    assert query.embeddings.shape == (1, 3) and bulk.embeddings.shape == (50, 3)
    assert query.token_counts == [len("how do I reset my password")]
