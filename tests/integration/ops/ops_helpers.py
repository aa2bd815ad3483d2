"""Shared helpers of the operations tests: clean environments, server commands, /metrics scraping."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

MINILM = "all-minilm-l6-v2"

# Variables an operator's shell might carry that would change what the server does.
_STRIPPED_PREFIXES = ("HF_", "HUGGINGFACE_", "TRANSFORMERS_", "EMBED_")

# Signs in a log that something tried (and failed) to reach the network.
NETWORK_TROUBLE = re.compile(
    r"Traceback|huggingface\.co|hf\.co|MaxRetryError|NewConnectionError|ConnectionError|ConnectTimeout"
    r"|Temporary failure in name resolution|Name or service not known|Network is unreachable"
    r"|nodename nor servname|LocalEntryNotFoundError|OfflineModeIsEnabled|We couldn't connect|timed out",
    re.IGNORECASE)

TEXTS = [
    "Why is the sky blue?",
    "Rayleigh scattering makes short wavelengths scatter more.",
    "the quick brown fox jumps over the lazy dog",
    "air gapped networks have no internet access at all",
    "embedding models map sentences to dense vectors " * 6,
    "ok",
    "Ünïcödé façade — naïve café 東京 🚀",
]


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without any HF_*/TRANSFORMERS_*/EMBED_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(_STRIPPED_PREFIXES)}
    env.update(extra)
    return env


def serve_cmd(port: int, models_dir: Path | None = None, model: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "embedding_server", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if models_dir is not None:
        cmd += ["--models-dir", str(models_dir)]
    if model:
        cmd += ["--model", model]
    return cmd


def stop(proc: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; the exit code."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def scrape(base: str) -> dict[str, list]:
    """/metrics as {family name: samples}."""
    r = httpx.get(f"{base}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def sample_sum(families: dict[str, list], sample: str, **labels: str) -> float:
    return sum(s.value for samples in families.values() for s in samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def vectors_of(body: dict) -> np.ndarray:
    """Vectors of an Ollama /api/embed or OpenAI /v1/embeddings (float) response body."""
    if "embeddings" in body:
        return np.asarray(body["embeddings"], dtype=np.float32)
    rows = sorted(body["data"], key=lambda d: d["index"])
    return np.asarray([d["embedding"] for d in rows], dtype=np.float32)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))
