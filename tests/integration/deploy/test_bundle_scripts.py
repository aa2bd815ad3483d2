"""package.sh (--dry-run, and a real run against a fake `docker`) and deploy/load-and-run.sh (checksums verified before anything is loaded)."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from tests.integration.deploy.deploy_support import REPO, COMPOSE, PACKAGE_SH, LOAD_AND_RUN, run


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
