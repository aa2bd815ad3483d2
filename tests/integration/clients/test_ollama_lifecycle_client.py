"""The ``ollama`` Python client managing models on a live server (``ps``, ``pull``, ``generate(keep_alive=0)``), and
the memory a load takes and an unload gives back, measured on the server process with the real all-MiniLM-L6-v2."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import ollama
import pytest

from embedding_server.engine.memory import estimate_bytes
from tests.support.checkpoints import minilm_path
from tests.support.server import running_server
from tests.support.wait import wait_until

pytestmark = pytest.mark.clients

SECOND = "minilm-second"  # the real MiniLM again, under another name: a second model of known size


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("lifecycle-client-models")
    (models / SECOND).symlink_to(minilm_path(), target_is_directory=True)
    log = tmp_path_factory.mktemp("logs") / "lifecycle.log"
    with running_server(models, log_path=log) as (base, proc):
        yield base, proc, log


def loaded(client: ollama.Client) -> set[str]:
    return {m.model for m in client.ps().models}


def test_ps_pull_and_unload_through_generate(server):
    base, _, _ = server
    client = ollama.Client(host=base)
    assert loaded(client) == {"all-minilm-l6-v2:latest"}
    ps = client.ps().models[0]
    assert ps.size > 0 and ps.expires_at.year == 2318  # the default model stays loaded
    progress = [p.status for p in client.pull(SECOND, stream=True)]
    assert progress[-1] == "success"
    assert client.pull(SECOND).status == "success"
    with pytest.raises(ollama.ResponseError) as info:
        client.pull("llama3.2")
    assert info.value.status_code == 404 and "never downloads" in info.value.error
    client.embed(model=SECOND, input="hello")
    expiry = next(m.expires_at for m in client.ps().models if m.model == f"{SECOND}:latest")
    assert 250 < expiry.timestamp() - time.time() <= 300  # EMBED_KEEP_ALIVE, 5 minutes
    done = client.generate(model=SECOND, keep_alive=0)
    assert done.done and done.done_reason == "unload"
    wait_until(lambda: loaded(client) == {"all-minilm-l6-v2:latest"}, timeout=60, what=f"{SECOND} to be unloaded")
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model=SECOND, prompt="Why is the sky blue?")
    assert info.value.status_code == 400 and "only embeds" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.delete(SECOND)
    assert info.value.status_code == 405


def test_a_load_takes_about_its_estimate_and_an_unload_gives_it_back(server):
    """RSS is read only where the server has just given its free heap back to the OS, so that what the allocator
    keeps for reuse (which moves with every request and idle trim) is in no reading: after an unload (the server logs
    it once its memory is released) and after a load (the worker releases what loading and warm-up freed before the
    load completes). A first load and unload pay the process's one-off costs of a second model."""
    base, proc, log = server
    http = httpx.Client(base_url=base, timeout=120, trust_env=False)
    for _ in range(3):  # the default model warm: one-off allocations of the process are made already
        http.post("/api/embed", json={"input": ["warm up " * 40] * 8})

    def load() -> None:
        r = http.post("/api/generate", json={"model": SECOND, "keep_alive": -1})
        assert r.status_code == 200 and r.json()["done_reason"] == "load", r.text

    def unload() -> int:
        """Unload SECOND and wait until the server has released its memory; the RSS then."""
        done = unloaded(log)
        assert http.post("/api/generate", json={"model": SECOND, "keep_alive": 0}).json()["done_reason"] == "unload"
        wait_until(lambda: unloaded(log) > done, timeout=60, what=f"{SECOND}'s unload to release its memory")
        return rss(proc.pid)

    load()
    before = unload()
    load()
    grown = rss(proc.pid) - before
    estimate = estimate_bytes(minilm_path(), "float32", 256)
    print(f"\n[load] RSS +{grown / 2**20:.0f} MB for an estimate of {estimate / 2**20:.0f} MB")
    assert 0.65 * estimate <= grown <= 1.35 * estimate, (grown / 2**20, estimate / 2**20)
    assert unload() - before <= 0.25 * grown  # the memory went back to the OS


def unloaded(log: Path) -> int:
    """How many times the server logged that it unloaded SECOND (after releasing its memory)."""
    return log.read_text(errors="replace").count(f"model {SECOND} unloaded (resident memory")
