"""Fault injection for the engine: encoders whose loads and forwards a test can stall, fail or kill on demand, and
an app built over them. Every stall waits on an event the test releases (never a fixed sleep)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from fastapi.testclient import TestClient

from embedding_server.app import create_app
from embedding_server.engine.engine import Engine
from embedding_server.model.encoder import SentenceEncoder
from embedding_server.settings import Settings


class WorkerKilled(BaseException):
    """Not an Exception: escapes every handler of the worker loop, as a bug in it would."""


@dataclass
class Faults:
    """What the next loads and forwards of the named models do. ``hang``: wait for ``release``; ``fail``: raise
    this exception (once, then cleared) when the job runs; ``load_gate``: loads wait for it."""

    models: set[str] = field(default_factory=set)  # which models misbehave (empty: all)
    hang: bool = False
    fail: BaseException | None = None
    fail_heads: frozenset[str] | None = None  # fail only jobs asking for one of these heads
    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Event = field(default_factory=threading.Event)  # a forward is inside the stall
    load_gate: threading.Event | None = None
    loads_started: list[str] = field(default_factory=list)  # loads of the named models, in order
    loading: threading.Event = field(default_factory=threading.Event)  # a load of a named model began

    def applies(self, name: str) -> bool:
        return not self.models or name in self.models


class FaultyJob:
    """A real job whose ``run`` first does what the faults say."""

    def __init__(self, job, faults: Faults, name: str, heads: frozenset[str]):
        self._job, self._faults, self._name, self._heads = job, faults, name, heads

    def run(self, seconds: float = float("inf")) -> bool:
        f = self._faults
        if f.applies(self._name):
            if f.hang:
                f.entered.set()
                assert f.release.wait(30), "the test never released the stalled forward"
            if f.fail is not None and (f.fail_heads is None or self._heads & f.fail_heads):
                error, f.fail = f.fail, None
                raise error
        return self._job.run(seconds)

    def __getattr__(self, name):
        return getattr(self._job, name)


class FaultyEncoder:
    """A real SentenceEncoder whose jobs are ``FaultyJob`` s."""

    def __init__(self, inner: SentenceEncoder, faults: Faults, name: str):
        self._inner, self._faults, self._name = inner, faults, name

    def start(self, batch, unit_ms=None, heads=frozenset({"dense"})):
        return FaultyJob(self._inner.start(batch, unit_ms, heads), self._faults, self._name, heads)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def faulty_engine(settings: Settings, faults: Faults) -> Engine:
    """An engine whose models load as real encoders wrapped in ``FaultyEncoder`` (loads wait at ``load_gate``)."""
    engine = Engine(settings)

    def factory(entry):
        if faults.applies(entry.name):
            faults.loads_started.append(entry.name)
            faults.loading.set()
        if faults.load_gate is not None and faults.applies(entry.name):
            assert faults.load_gate.wait(60), "the test never opened the load gate"
        return FaultyEncoder(engine._load_encoder(entry), faults, entry.name)

    engine._encoder_factory = factory
    return engine


def open_faulty(settings: Settings, faults: Faults) -> TestClient:
    """A TestClient (lifespan running, default model loaded) over ``faulty_engine``."""
    from tests.conftest import open_client

    return open_client(settings, engine=faulty_engine(settings, faults))
