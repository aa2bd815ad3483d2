"""The server in a network namespace with no network at all (only `lo`) and no HF_*/TRANSFORMERS_* variables.

This is the air-gapped host: there is no route anywhere, no Hugging Face cache (HOME is an empty folder),
and no offline switch in the environment: the service has to set its own. Clients run inside the same
namespace (its loopback is not the host's), and the server log must show no network trouble.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.integration.ops.ops_helpers import MINILM, NETWORK_TROUBLE, TEXTS, clean_env, min_cosine, serve_cmd, stop
from tests.support.checkpoints import make_tiny_xlmr, minilm_path
from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # live server processes in network namespaces: left out of make test-fast

PORT = 18080  # the namespace is empty: any port is free in it
HEALTH_TIMEOUT = 240.0

# Runs inside the namespace: wait for /health, then one request per dialect; prints JSON on stdout.
CLIENT = r"""
import json, sys, time, urllib.error, urllib.request
base, model, patience = sys.argv[1], sys.argv[2], float(sys.argv[3])
texts = json.loads(sys.argv[4])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy

def call(path, body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")

deadline = time.monotonic() + patience
while True:
    try:
        if call("/health", timeout=3)[0] == 200:
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        print(json.dumps({"unhealthy": True}))
        sys.exit(3)
    time.sleep(0.3)
print(json.dumps({"ollama": call("/api/embed", {"model": model, "input": texts}),
                  "openai": call("/v1/embeddings", {"model": model, "input": texts}),
                  "tags": call("/api/tags")}))
"""


class Namespace:
    """An empty network namespace: `unshare -n` (preferred) or `ip netns add` (fallback)."""

    def __init__(self, kind: str):
        self.kind, self.name, self.server_pid = kind, f"embed-ops-{uuid.uuid4().hex[:8]}", None
        if kind == "netns":
            subprocess.run(["ip", "netns", "add", self.name], check=True, timeout=20)
            subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"], check=True, timeout=20)

    def server(self, cmd: list[str]) -> list[str]:
        if self.kind == "unshare":  # unshare execs sh, sh execs python: one pid, which names the namespace
            return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *cmd]
        return ["ip", "netns", "exec", self.name, *cmd]

    def entered(self, proc: subprocess.Popen, timeout: float = 20.0) -> None:
        """Wait until the server process is in its own namespace (unshare(2) runs after Popen returns)."""
        self.server_pid = proc.pid
        if self.kind != "unshare":
            return
        ours = os.readlink("/proc/self/ns/net")

        def moved() -> bool:
            assert proc.poll() is None, "the server exited before unshare -n took effect"
            return os.readlink(f"/proc/{proc.pid}/ns/net") != ours

        wait_until(moved, timeout, what="unshare -n to take effect")

    def inside(self, cmd: list[str]) -> list[str]:
        if self.kind == "unshare":
            return ["nsenter", f"--net=/proc/{self.server_pid}/ns/net", *cmd]
        return ["ip", "netns", "exec", self.name, *cmd]

    def close(self) -> None:
        if self.kind == "netns":
            subprocess.run(["ip", "netns", "del", self.name], timeout=20)


def _namespace_kind() -> tuple[str | None, str]:
    """Which way of making an empty network namespace works here, and why not if none."""
    if shutil.which("ip") is None:
        return None, "iproute2 (`ip`) is not installed"
    reasons = []
    if shutil.which("unshare") and shutil.which("nsenter"):
        r = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True,
                           timeout=20)
        if r.returncode == 0:
            return "unshare", ""
        reasons.append(f"`unshare -n` failed: {r.stderr.strip()}")
    else:
        reasons.append("unshare/nsenter not installed")
    probe = f"embed-ops-probe-{uuid.uuid4().hex[:8]}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=20)
    if r.returncode == 0:
        subprocess.run(["ip", "netns", "del", probe], timeout=20)
        return "netns", ""
    reasons.append(f"`ip netns add` failed: {r.stderr.strip()}")
    return None, "; ".join(reasons)


@pytest.fixture(scope="module")
def namespace_kind() -> str:
    kind, why = _namespace_kind()
    if kind is None:
        print(f"SKIP offline netns tests: {why}", file=sys.stderr)
        pytest.skip(f"cannot create a network namespace: {why}")
    return kind


def _in_process_reference(folder: Path, texts: list[str]) -> np.ndarray:
    from embedding_server.model.encoder import SentenceEncoder

    encoder = SentenceEncoder(folder)
    return encoder.embed(encoder.tokenize(texts))


@pytest.mark.parametrize("case", ["embedded-minilm", "tiny-xlmr"])
def test_serves_both_dialects_without_any_network(case, namespace_kind, tmp_path):
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    if case == "tiny-xlmr":
        folder, model, dim = make_tiny_xlmr(models_dir / "tiny-xlmr", pooling="cls"), "tiny-xlmr", 32
    else:  # EMBED_MODELS_DIR is empty: the embedded all-MiniLM-L6-v2 package is the default model
        folder, model, dim = minilm_path(), MINILM, 384
    home = tmp_path / "home"  # no Hugging Face cache to fall back on
    home.mkdir()
    env = clean_env(HOME=str(home), EMBED_MODELS_DIR=str(models_dir), PYTHONUNBUFFERED="1")
    assert not [k for k in env if k.startswith(("HF_", "TRANSFORMERS_"))]

    ns = Namespace(namespace_kind)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(ns.server(serve_cmd(PORT, model=model if case == "tiny-xlmr" else None)),
                                env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ns.entered(proc)
        links = subprocess.run(ns.inside(["ip", "-o", "link", "show"]), capture_output=True, text=True,
                               timeout=30, env=env)
        assert links.returncode == 0, links.stderr
        assert [line.split(":")[1].strip() for line in links.stdout.splitlines()] == ["lo"], links.stdout
        routes = subprocess.run(ns.inside(["ip", "-4", "route", "show"]), capture_output=True, text=True,
                                timeout=30, env=env)
        assert routes.returncode == 0 and routes.stdout.strip() == "", routes.stdout  # no route anywhere

        client = subprocess.run(
            ns.inside([sys.executable, "-c", CLIENT, f"http://127.0.0.1:{PORT}", model, str(HEALTH_TIMEOUT),
                       json.dumps(TEXTS)]),
            capture_output=True, text=True, timeout=HEALTH_TIMEOUT + 120, env=env)
        assert proc.poll() is None, f"server died: {log_path.read_text(errors='replace')[-3000:]}"
        assert client.returncode == 0, f"{client.stdout}\n{client.stderr}\n{log_path.read_text(errors='replace')}"
        out = json.loads(client.stdout)
    finally:
        code = stop(proc)
        ns.close()

    log_text = log_path.read_text(errors="replace")
    (status, ollama), (status_oa, openai), (status_tags, tags) = out["ollama"], out["openai"], out["tags"]
    assert status == 200, ollama
    assert status_oa == 200, openai
    assert status_tags == 200 and f"{model}:latest" in [m["name"] for m in tags["models"]]
    ollama_vectors = np.asarray(ollama["embeddings"], dtype=np.float32)
    openai_vectors = np.asarray([d["embedding"] for d in sorted(openai["data"], key=lambda d: d["index"])],
                                dtype=np.float32)
    assert ollama["model"] == model and openai["model"] == model
    assert ollama_vectors.shape == openai_vectors.shape == (len(TEXTS), dim)
    assert np.allclose(np.linalg.norm(ollama_vectors, axis=1), 1.0, atol=1e-4)
    assert np.allclose(ollama_vectors, openai_vectors, atol=1e-6)
    assert ollama["prompt_eval_count"] == openai["usage"]["prompt_tokens"] > len(TEXTS)
    # The vectors are the model's: the same as encoding the folder in this (networked) process.
    assert min_cosine(ollama_vectors, _in_process_reference(folder, TEXTS)) >= 0.99999

    # A clean stop on SIGTERM (0, or death by the re-raised SIGTERM; the exit status itself is
    # test_graceful_shutdown's business), never the SIGKILL fallback of stop().
    assert code in (0, -signal.SIGTERM), f"exit code {code} after SIGTERM\n{log_text[-3000:]}"
    assert f"model {model} loaded from" in log_text, log_text[-3000:]
    trouble = [line for line in log_text.splitlines() if NETWORK_TROUBLE.search(line)]
    assert not trouble, "network trouble in the server log:\n" + "\n".join(trouble)
    warnings = [line for line in log_text.splitlines() if " WARNING " in line or line.startswith("WARNING")]
    assert not warnings, "warnings in the server log:\n" + "\n".join(warnings)
