"""examples/movie-search end to end with the real all-MiniLM-L6-v2: movies.csv indexed by the ``embed`` CLI (in
process), searched by cosine in FAISS and in Qdrant's in-process mode, the query embedded by a live server's
``/api/embed``. A query about a stranded astronaut must rank the three Mars survival films above every other
film (near distractors: Gravity, Cast Away, Total Recall, John Carter, Moon, Apollo 13...)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.examples import load_script

pytestmark = pytest.mark.slow  # the example end to end with a live server: left out of make test-fast

ROOT = Path(__file__).resolve().parents[3]
FOLDER = ROOT / "examples" / "movie-search"
SCRIPT = FOLDER / "search.py"
CSV = FOLDER / "movies.csv"

QUERY = "an astronaut stranded alone on Mars must survive until rescue"
# The Martian (2015), Robinson Crusoe on Mars (1964), Red Planet (2000)
MARS_SURVIVAL = {"24", "38", "61"}


def _example():
    return load_script(SCRIPT)


@pytest.fixture(scope="module")
def example():
    return _example()


@pytest.fixture(scope="module")
def indexed(example, tmp_path_factory):
    """movies.csv through ``python -m embedding_server embed`` (in-process): (vectors, ids)."""
    return example.index(CSV, tmp_path_factory.mktemp("movie-vectors"))


def test_the_mars_survival_films_are_the_ones_named():
    with open(CSV, newline="", encoding="utf-8") as f:
        names = {row["id"]: row["title"] for row in csv.DictReader(f)}
    assert {names[i] for i in MARS_SURVIVAL} == {"The Martian", "Robinson Crusoe on Mars", "Red Planet"}


def test_the_cli_writes_one_normalised_row_per_movie_in_order(indexed):
    vectors, ids = indexed
    with open(CSV, newline="", encoding="utf-8") as f:
        csv_ids = [row["id"] for row in csv.DictReader(f)]
    assert ids == csv_ids and len(ids) >= 50
    assert vectors.dtype == np.float32 and vectors.shape == (len(ids), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_a_stranded_astronaut_query_ranks_the_mars_survival_films_first(example, indexed, live_server):
    vectors, ids = indexed
    query = example.embed_query(live_server, QUERY)
    by_faiss = example.search_faiss(example.build_faiss(vectors), ids, query, k=5)
    by_qdrant = example.search_qdrant(example.build_qdrant(vectors, ids), query, k=5)
    n = len(MARS_SURVIVAL)
    assert {movie for movie, _ in by_faiss[:n]} == MARS_SURVIVAL, by_faiss
    assert {movie for movie, _ in by_qdrant[:n]} == MARS_SURVIVAL, by_qdrant
    # Both are exact cosine searches over the same vectors: same top 5, same order, same scores.
    assert [movie for movie, _ in by_faiss] == [movie for movie, _ in by_qdrant]
    np.testing.assert_allclose([s for _, s in by_faiss], [s for _, s in by_qdrant], atol=1e-4)


def test_indexing_through_the_server_gives_the_same_vectors(example, indexed, live_server, tmp_path):
    vectors, ids = indexed
    served, served_ids = example.index(CSV, tmp_path, url=live_server)
    assert served_ids == ids and served.shape == vectors.shape
    assert np.min(np.sum(served * vectors, axis=1)) > 0.999


def test_the_script_prints_both_rankings(live_server, tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--url", live_server, "--out", str(tmp_path), QUERY],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    lines = lines[lines.index("FAISS:"):]  # after whatever the embed CLI reports on stdout
    assert len(lines) == 12 and lines[6] == "Qdrant:"
    assert lines[1:6] == lines[7:12]
    assert any(title in lines[1] for title in ("The Martian", "Robinson Crusoe on Mars", "Red Planet"))
