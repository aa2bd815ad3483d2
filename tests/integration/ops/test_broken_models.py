"""Broken model folders, as an operator produces them (half-copied, truncated, files forgotten).

A broken DEFAULT model stops `embedding-server serve` at once: exit status 1 and ONE stderr line naming the
folder and what is wrong, no traceback. A broken OTHER model stops nothing: the server comes up, serves the
good models, answers the broken one with a clean 503 and leaves it out of the model lists.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.ops.ops_helpers import clean_env, serve_cmd, stop
from tests.support.checkpoints import make_tiny_bert
from tests.support.server import free_port, running_server

pytestmark = pytest.mark.slow  # a live server process per broken folder: left out of make test-fast

EXIT_WITHIN = 60.0  # seconds; the check runs before torch is imported

# Every way a folder is broken that the file check catches, and the words the one line must carry.
BREAKAGES = {
    "no-weights": "missing weights",
    "corrupt-weights": "corrupt weights file model.safetensors",
    "no-tokenizer": "missing tokenizer files",
    "no-config": "missing config.json",
}

# A log line starts with a timestamp (our logging) or a level prefix (uvicorn); anything else is the
# continuation of a multi-line message or a traceback.
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) |"
                      r"(DEBUG|INFO|WARNING|ERROR|CRITICAL):\s)")


def _break(folder: Path, how: str) -> Path:
    if how == "no-weights":
        (folder / "model.safetensors").unlink()
    elif how == "corrupt-weights":  # a copy cut short: the file keeps only half its bytes
        weights = folder / "model.safetensors"
        with weights.open("r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    elif how == "no-tokenizer":
        (folder / "tokenizer.json").unlink()
    elif how == "no-config":
        (folder / "config.json").unlink()
    elif how == "unknown-architecture":  # passes the file check; transformers refuses it at load
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "no-such-architecture"}))
    elif how == "corrupt-tokenizer":  # passes the file check; the tokenizer cannot be parsed at load
        (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text()[:500])
    return folder


@pytest.fixture(scope="module")
def good_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("template") / "tiny-bert")


def _models_dir(root: Path, good_bert: Path, broken: dict[str, str]) -> Path:
    """A models dir with the good tiny-bert and one broken copy of it per ``{name: breakage}``."""
    shutil.copytree(good_bert, root / "tiny-bert")
    for name, how in broken.items():
        _break(shutil.copytree(good_bert, root / name), how)
    return root


def _serve_until_exit(models_dir: Path, model: str) -> tuple[int, str, str, float]:
    started = time.monotonic()
    r = subprocess.run(serve_cmd(free_port(), models_dir, model), env=clean_env(), capture_output=True, text=True,
                       timeout=EXIT_WITHIN + 60)
    return r.returncode, r.stdout, r.stderr, time.monotonic() - started


@pytest.mark.parametrize("how", list(BREAKAGES))
def test_broken_default_model_stops_start_with_one_line(how, good_bert, tmp_path):
    models_dir = _models_dir(tmp_path / "models", good_bert, {"encoder": how})
    code, out, err, seconds = _serve_until_exit(models_dir, "encoder")

    assert code == 1, (code, out, err)
    assert seconds < EXIT_WITHIN
    assert "Traceback" not in out + err
    assert "Uvicorn running" not in out + err  # never listened
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, "expected one stderr line, got:\n" + err
    assert lines[0].startswith("embedding-server: cannot start: ")
    assert str(models_dir / "encoder") in lines[0] and BREAKAGES[how] in lines[0], lines[0]


def test_unknown_default_model_name_stops_start_with_a_helpful_line(good_bert, tmp_path):
    models_dir = _models_dir(tmp_path / "models", good_bert, {})
    code, out, err, seconds = _serve_until_exit(models_dir, "bge-m3")

    assert code == 1, (code, out, err)
    assert seconds < EXIT_WITHIN
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert f"default model 'bge-m3' not found in {models_dir}" in lines[0]
    assert "tiny-bert" in lines[0]  # what is there
    assert "./download-model.sh bge-m3" in lines[0] and "EMBED_MODEL" in lines[0]  # how to fix it


@pytest.fixture(scope="module")
def server_with_broken_models(good_bert, tmp_path_factory):
    root = tmp_path_factory.mktemp("mixed")
    broken = {f"broken-{how}": how for how in [*BREAKAGES, "unknown-architecture", "corrupt-tokenizer"]}
    models_dir = _models_dir(root / "models", good_bert, broken)
    log_path = root / "server.log"
    with running_server(models_dir, env={"PYTHONUNBUFFERED": "1"}, model="tiny-bert", log_path=log_path) as (base, _):
        yield base, broken, models_dir, log_path


def _embed(base: str, model: str) -> tuple[httpx.Response, httpx.Response]:
    body = {"model": model, "input": ["hello", "world"]}
    return (httpx.post(f"{base}/api/embed", json=body, timeout=60),
            httpx.post(f"{base}/v1/embeddings", json=body, timeout=60))


def test_broken_other_models_do_not_stop_the_good_ones(server_with_broken_models):
    base, broken, _, _ = server_with_broken_models
    assert httpx.get(f"{base}/health", timeout=10).json() == {"status": "ok"}
    for name in broken:
        ollama, openai = _embed(base, name)
        message = f"model '{name}' cannot be loaded; the server log says why"
        assert (ollama.status_code, ollama.json()) == (503, {"error": message}), name
        assert openai.status_code == 503, name
        assert openai.json()["error"] == {"message": message, "type": "server_error", "param": None,
                                          "code": "model_unavailable"}
        again = httpx.post(f"{base}/api/embed", json={"model": name, "input": "x"}, timeout=60)
        assert (again.status_code, again.json()) == (503, {"error": message})  # a failed load stays failed

    ollama, openai = _embed(base, "tiny-bert")  # the good model, after all those failures
    assert ollama.status_code == openai.status_code == 200
    assert len(ollama.json()["embeddings"]) == 2 and len(ollama.json()["embeddings"][0]) == 32
    assert httpx.get(f"{base}/health", timeout=10).status_code == 200
    assert httpx.get(f"{base}/ready", timeout=10).status_code == 200


def test_broken_models_are_left_out_of_the_model_lists(server_with_broken_models):
    base, broken, _, _ = server_with_broken_models
    for name in broken:  # also those that only fail when loaded: try them first
        _embed(base, name)
    tags = {m["name"] for m in httpx.get(f"{base}/api/tags", timeout=10).json()["models"]}
    assert "tiny-bert:latest" in tags and not tags & {f"{name}:latest" for name in broken}, tags
    ids = {m["id"] for m in httpx.get(f"{base}/v1/models", timeout=10).json()["data"]}
    assert "tiny-bert" in ids and not ids & set(broken), ids
    ps = {m["name"] for m in httpx.get(f"{base}/api/ps", timeout=10).json()["models"]}
    assert ps == {"tiny-bert:latest"}


def test_broken_models_are_not_described_as_servable(server_with_broken_models):
    # Left out of /api/tags and /v1/models, so /api/show and /v1/models/{id} must not describe them
    # as if they worked: a clean error in each dialect instead.
    base, broken, _, _ = server_with_broken_models
    for name in broken:
        _embed(base, name)
        show = httpx.post(f"{base}/api/show", json={"model": name}, timeout=10)
        assert show.status_code in (404, 503) and set(show.json()) == {"error"}, (name, show.text)
        retrieve = httpx.get(f"{base}/v1/models/{name}", timeout=10)
        assert retrieve.status_code in (404, 503), (name, retrieve.text)
        assert retrieve.json()["error"]["code"] in ("model_not_found", "model_unavailable")


def test_each_broken_model_is_one_clear_log_line(server_with_broken_models):
    base, broken, models_dir, log_path = server_with_broken_models
    for name in broken:
        _embed(base, name)
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text
    strays = [line for line in text.splitlines() if not LOG_LINE.match(line)]
    assert not strays, "log lines that are not one-line records:\n" + "\n".join(strays[:20])
    for name in broken:
        mentions = [line for line in text.splitlines() if f"{models_dir / name}:" in line]
        assert len(mentions) == 1, f"{name}: {len(mentions)} log lines:\n" + "\n".join(mentions)
        assert " ERROR " in mentions[0]
    for name, how in broken.items():
        if how in BREAKAGES:
            assert BREAKAGES[how] in next(line for line in text.splitlines() if f"{models_dir / name}:" in line)


def test_default_model_failing_at_load_exits_1_with_one_line(good_bert, tmp_path):
    # tokenizer.json cut short passes the file check; the failure comes when the model loads, after
    # the server is up: one log line says why, and the process stops by itself with status 1
    # (an orchestrator restarts it or shows it failed; it never sits there unhealthy).
    models_dir = _models_dir(tmp_path / "models", good_bert, {"encoder": "corrupt-tokenizer"})
    port, log_path = free_port(), tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(serve_cmd(port, models_dir, "encoder"), env=clean_env(PYTHONUNBUFFERED="1"),
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            stop(proc)
    text = log_path.read_text(errors="replace")
    assert "Traceback" not in text
    mentions = [line for line in text.splitlines() if str(models_dir / "encoder") in line]
    assert mentions and all(" ERROR " in line for line in mentions), text[-3000:]
    assert any("tokenizer" in line for line in mentions), mentions
    assert code == 1, f"exit status {code} after the default model failed to load\n{text[-2000:]}"
