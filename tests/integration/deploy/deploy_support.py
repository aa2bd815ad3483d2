"""Paths and tool lookup shared by the deployment-artifact tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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

def tool(binary: str) -> str:
    """Path of a CLI tool from the venv (or PATH). The `test` extra installs them all: a missing one
    is a missing install step, so it fails here rather than being installed or skipped."""
    for candidate in (VENV_BIN / binary, shutil.which(binary)):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail(f"{binary} not found: install the test extra (pip install -e '.[test]')")


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    kwargs.setdefault("capture_output", True)
    kwargs.setdefault("text", True)
    kwargs.setdefault("timeout", 300)
    return subprocess.run(argv, **kwargs)


