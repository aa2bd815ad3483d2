"""examples/hybrid-search runs against a live server serving a BGE-M3-shaped model (the tiny fixture: its vectors
are meaningless, so the check is that a document's own text, as the query, comes first in the fused ranking)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.examples import load_script
from tests.support.server import running_server
from tests.unit.model.test_m3_heads import FOLDER

pytestmark = pytest.mark.slow  # the example end to end with a live server: left out of make test-fast

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "examples" / "hybrid-search" / "hybrid_search.py"


def _example():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def m3_server(tmp_path_factory):
    models = tmp_path_factory.mktemp("example-models")
    shutil.copytree(FOLDER, models / "bge-m3")
    with running_server(models, model="bge-m3") as (base, _proc):
        yield base


def test_a_documents_own_text_ranks_it_first(m3_server):
    example = _example()
    client = example.build_index(m3_server, "bge-m3", example.DOCUMENTS)
    assert client.count("docs").count == len(example.DOCUMENTS)
    for document in example.DOCUMENTS[:3]:
        hits = example.search(client, m3_server, "bge-m3", document)
        assert hits[0][0] == document and len(hits) == 3


def test_the_script_prints_its_ranking(m3_server):
    query = _example().DOCUMENTS[4]
    out = subprocess.run([sys.executable, str(SCRIPT), "--url", m3_server, query], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].endswith(query)
