"""The container's exact command line, run outside Docker (there is no Docker engine here).

Reads the runtime stage of the Dockerfile -- its ENV lines and its exec-form ENTRYPOINT/CMD -- and
runs that command from this venv's bin dir with exactly that environment, except:
  * EMBED_MODELS_DIR: an empty temp dir instead of /models, so the embedded default model is used;
  * EMBED_PORT: a free port (EMBED_HOST stays 0.0.0.0; the test connects to 127.0.0.1);
  * /opt/venv/bin in PATH -> this venv's bin dir; the /tmp/... cache dirs -> a temp dir.
Then: /health and /ready turn 200, /api/embed returns a 384-float vector, the image's own
HEALTHCHECK command passes, and SIGTERM ends the process within 15 s.
"""

from __future__ import annotations

import json
import math
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.wait import wait_until

pytestmark = pytest.mark.slow  # the image's command as a live server process: left out of make test-fast

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"
VENV_BIN = Path(sys.executable).parent
IMAGE_VENV_BIN = "/opt/venv/bin"
# What the python:3.11-slim base image itself puts in the environment (ENV of the base image).
BASE_IMAGE_ENV = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}

STARTUP_TIMEOUT_S = 90.0
SIGTERM_TIMEOUT_S = 15.0


# --- Dockerfile reading ---------------------------------------------------------------------------

def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comment lines dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # Docker drops comment lines, also inside a continuation
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def _substitute(value: str, variables: dict[str, str]) -> str:
    """Dockerfile variable substitution: $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alt}."""

    def repl(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        op, word = match.group(2), match.group(3) or ""
        current = variables.get(name, "")
        if op == ":-":
            return current or word
        if op == ":+":
            return word if current else ""
        return current

    return re.sub(r"\$\{(\w+)(?:(:[-+])([^}]*))?\}|\$(\w+)", repl, value)


def runtime_stage() -> dict:
    """ENV (in order, substituted), ENTRYPOINT, CMD and HEALTHCHECK of the last (runtime) stage."""
    instructions = _instructions(DOCKERFILE.read_text())
    global_args: dict[str, str] = {}
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions:
        if keyword == "FROM":
            stages.append([])
        elif not stages:
            if keyword == "ARG":  # ARGs before the first FROM
                name, _, default = rest.partition("=")
                global_args[name] = default.strip('"')
        else:
            stages[-1].append((keyword, rest))
    assert stages, "no FROM in the Dockerfile"

    args: dict[str, str] = {}
    env: dict[str, str] = dict(BASE_IMAGE_ENV)
    result: dict = {"env": {}, "entrypoint": None, "cmd": None, "healthcheck": None}
    for keyword, rest in stages[-1]:
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default.strip('"') if default else global_args.get(name, "")
        elif keyword == "ENV":
            for token in shlex.split(rest):
                name, sep, value = token.partition("=")
                assert sep, f"legacy `ENV key value` form is not supported: ENV {rest}"
                env[name] = result["env"][name] = _substitute(value, {**args, **env})
        elif keyword in ("ENTRYPOINT", "CMD"):
            parsed = json.loads(rest)  # exec form is JSON; shell form fails here, on purpose
            assert isinstance(parsed, list) and all(isinstance(p, str) for p in parsed), rest
            result[keyword.lower()] = parsed
        elif keyword == "HEALTHCHECK":
            cmd = rest[rest.index("CMD") + 3:].strip()
            result["healthcheck"] = json.loads(cmd)
    return result


# --- helpers ----------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return sock.getsockname()[1]


def _wait_for_200(client: httpx.Client, path: str, proc: subprocess.Popen, log: Path) -> None:
    """Until ``path`` answers 200; fails at once, with the log, if the server exits meanwhile."""
    last = ["no answer yet"]

    def ok() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode} before {path} was 200:\n{log.read_text()[-4000:]}")
        try:
            response = client.get(path, timeout=5)
        except httpx.HTTPError as exc:
            last[0] = repr(exc)
            return False
        last[0] = f"{response.status_code} {response.text[:200]}"
        return response.status_code == 200

    try:
        wait_until(ok, STARTUP_TIMEOUT_S, interval=0.5, what=f"{path} to answer 200")
    except AssertionError as exc:
        pytest.fail(f"{exc} (last: {last[0]}):\n{log.read_text()[-4000:]}")


def test_runtime_stage_is_parsed() -> None:
    stage = runtime_stage()
    assert stage["entrypoint"] + (stage["cmd"] or []) == ["embedding-server", "serve"]
    assert stage["env"]["EMBED_HOST"] == "0.0.0.0"
    assert stage["env"]["EMBED_MODEL"] == "all-minilm-l6-v2"  # MODEL build arg empty by default
    assert stage["env"]["PATH"].startswith(IMAGE_VENV_BIN + ":")


def test_container_command_serves_embeddings_and_stops_on_sigterm(tmp_path: Path) -> None:
    stage = runtime_stage()
    argv = stage["entrypoint"] + (stage["cmd"] or [])
    executable = VENV_BIN / argv[0]
    assert executable.exists(), (
        f"{executable} missing: install the package into this venv (make install) -- "
        f"the image runs {argv[0]} from {IMAGE_VENV_BIN}")

    models_dir = tmp_path / "models"  # empty: the embedded default model must be used
    models_dir.mkdir()
    scratch = tmp_path / "tmp"  # stands for the container's /tmp
    home = tmp_path / "home"  # stands for /home/embed
    home.mkdir()
    port = _free_port()

    env = {"HOME": str(home)}
    for name, value in {**BASE_IMAGE_ENV, **stage["env"]}.items():
        if name == "PATH":
            value = value.replace(IMAGE_VENV_BIN, str(VENV_BIN))
        elif value.startswith("/tmp/"):
            value = str(scratch / value[len("/tmp/"):])
        env[name] = value
    env["EMBED_MODELS_DIR"] = str(models_dir)
    env["EMBED_PORT"] = str(port)
    assert env["EMBED_HOST"] == "0.0.0.0"

    log = tmp_path / "server.log"
    with log.open("wb") as log_file:
        # argv as is: its program is found through the image's PATH (here: this venv's bin dir).
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path,
                                stdout=log_file, stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base_url) as client:
            _wait_for_200(client, "/health", proc, log)
            _wait_for_200(client, "/ready", proc, log)

            response = client.post("/api/embed", json={"model": "all-minilm-l6-v2", "input": "hello"}, timeout=60)
            assert response.status_code == 200, response.text
            embeddings = response.json()["embeddings"]
            assert len(embeddings) == 1
            vector = embeddings[0]
            assert len(vector) == 384
            assert all(isinstance(x, float) and math.isfinite(x) for x in vector)

        # The image's own HEALTHCHECK command, in the same environment, must pass.
        probe = stage["healthcheck"]
        assert probe, "no HEALTHCHECK in the runtime stage"
        checked = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
        assert checked.returncode == 0, checked.stderr

        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=SIGTERM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {SIGTERM_TIMEOUT_S:.0f} s after SIGTERM:\n{log.read_text()[-4000:]}")
        # A clean shutdown exits 0; dying of the signal itself is accepted too. Anything else is a crash.
        assert code in (0, -signal.SIGTERM), f"exit code {code} after SIGTERM:\n{log.read_text()[-4000:]}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
