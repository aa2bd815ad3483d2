"""Every shell script: bash -n and shellcheck; deploy scripts strict and executable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from tests.integration.deploy.deploy_support import REPO, PACKAGE_SH, LOAD_AND_RUN, tool, run


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
    shellcheck = tool("shellcheck")
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

