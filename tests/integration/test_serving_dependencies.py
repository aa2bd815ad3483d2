"""The serving install needs neither sentence-transformers nor scikit-learn nor scipy."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest

pytestmark = pytest.mark.slow  # an app in a fresh interpreter: left out of make test-fast

FORBIDDEN = {"sentence-transformers", "scikit-learn", "scipy"}


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_runtime_dependency_closure_excludes_test_only_packages():
    seen, todo = set(), ["embedding-server"]
    while todo:
        dist = todo.pop()
        if dist in seen:
            continue
        seen.add(dist)
        try:
            requires = metadata.requires(dist) or []
        except metadata.PackageNotFoundError:
            continue  # an optional platform dependency not installed here
        todo += [_name(r) for r in requires if "extra ==" not in r]
    assert "torch" in seen and "transformers" in seen  # the walk really followed the tree
    assert not (seen & FORBIDDEN), f"serving install pulls {seen & FORBIDDEN}"


def test_server_embeds_with_those_packages_unimportable(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        # As if not installed: `import x` raises ModuleNotFoundError, importlib.util.find_spec(x) is None.
        for name in ("sentence_transformers", "sklearn", "scipy"):
            sys.modules[name] = None
        from fastapi.testclient import TestClient
        from embedding_server.app import create_app
        from embedding_server.settings import Settings
        with TestClient(create_app(Settings(models_dir={str(tmp_path)!r}))) as c:
            deadline = time.time() + 300
            while c.get("/health").status_code != 200:
                assert time.time() < deadline and not c.app.state.load_error, c.app.state.load_error
                time.sleep(0.1)
            r = c.post("/api/embed", json={{"model": "all-minilm-l6-v2", "input": ["offline", "vectors"]}})
            assert r.status_code == 200 and len(r.json()["embeddings"][0]) == 384, r.text
        print("OK", sorted(m for m, mod in sys.modules.items()
                           if mod is not None and m.split(".")[0] in ("sentence_transformers", "sklearn", "scipy")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=420)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("OK []")
