"""Semantic movie search: movies.csv indexed with ``embedding-server embed``, searched by cosine in FAISS and in
Qdrant's local in-process mode, the query embedded by the running server's ``POST /api/embed``.

    python examples/movie-search/search.py --url http://127.0.0.1:8000 "an astronaut stranded alone on Mars"

The overviews are embedded once, offline, by the CLI (``vectors.npy``: float32 rows, L2-normalised, in the CSV's
order; ``vectors.ids.json``: the CSV's ids as strings). On normalised vectors the inner product is the cosine, so
FAISS's exact ``IndexFlatIP`` and a Qdrant collection with ``Distance.COSINE`` give the same ranking.
Needs ``pip install faiss-cpu qdrant-client requests``; no Qdrant server (``QdrantClient(":memory:")``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import requests
from qdrant_client import QdrantClient, models

HERE = Path(__file__).resolve().parent
CSV = HERE / "movies.csv"
MODEL = "all-minilm-l6-v2"


def index(csv_path: Path, out_dir: Path, url: str | None = None, model: str = MODEL) -> tuple[np.ndarray, list[str]]:
    """Embed the overviews with the CLI (in-process, or through the server at ``url``); the vectors and their ids."""
    out = Path(out_dir) / "vectors.npy"
    cmd = [sys.executable, "-m", "embedding_server", "embed", str(csv_path),
           "--column", "overview", "--id-column", "id", "--model", model, "--out", str(out)]
    if url:
        cmd += ["--url", url]
    subprocess.run(cmd, check=True)
    ids = json.loads(out.with_name("vectors.ids.json").read_text())
    return np.load(out), ids


def titles(csv_path: Path) -> dict[str, str]:
    """Movie id -> "Title (year)"."""
    with open(csv_path, newline="", encoding="utf-8") as f:
        return {row["id"]: f"{row['title']} ({row['year']})" for row in csv.DictReader(f)}


def embed_query(url: str, text: str, model: str = MODEL, api_key: str | None = None) -> np.ndarray:
    """The query's vector from the server's Ollama-style ``POST /api/embed``."""
    headers = {"X-API-Key": api_key} if api_key else {}
    response = requests.post(f"{url}/api/embed", json={"model": model, "input": text}, headers=headers, timeout=120)
    response.raise_for_status()
    return np.asarray(response.json()["embeddings"][0], dtype=np.float32)


def build_faiss(vectors: np.ndarray) -> faiss.IndexFlatIP:
    """Exact inner-product index: the cosine, as the rows are L2-normalised."""
    faiss_index = faiss.IndexFlatIP(vectors.shape[1])
    faiss_index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return faiss_index


def search_faiss(faiss_index: faiss.IndexFlatIP, ids: list[str], query: np.ndarray,
                 k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` nearest movies as (id, cosine)."""
    q = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    faiss.normalize_L2(q)
    scores, rows = faiss_index.search(q, k)
    return [(ids[row], float(score)) for row, score in zip(rows[0], scores[0]) if row >= 0]


def build_qdrant(vectors: np.ndarray, ids: list[str]) -> QdrantClient:
    """An in-process Qdrant collection; point ids are row numbers, the movie id is in the payload."""
    client = QdrantClient(":memory:")
    client.create_collection("movies", vectors_config=models.VectorParams(size=vectors.shape[1],
                                                                           distance=models.Distance.COSINE))
    client.upsert("movies", points=[models.PointStruct(id=row, vector=vector.tolist(), payload={"movie_id": movie_id})
                                    for row, (movie_id, vector) in enumerate(zip(ids, vectors))])
    return client


def search_qdrant(client: QdrantClient, query: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` nearest movies as (id, cosine)."""
    hits = client.query_points("movies", query=query.tolist(), limit=k).points
    return [(hit.payload["movie_id"], hit.score) for hit in hits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("query", nargs="?", default="an astronaut stranded alone on Mars must survive until rescue")
    parser.add_argument("--url", default=os.environ.get("EMBEDDING_SERVER_URL", "http://127.0.0.1:8000"),
                        help="the running server (default: $EMBEDDING_SERVER_URL or %(default)s)")
    parser.add_argument("--out", type=Path, default=HERE, help="where vectors.npy goes (default: beside this script)")
    args = parser.parse_args()
    vectors, ids = index(CSV, args.out)
    names = titles(CSV)
    query = embed_query(args.url, args.query)
    for name, hits in (("FAISS", search_faiss(build_faiss(vectors), ids, query)),
                       ("Qdrant", search_qdrant(build_qdrant(vectors, ids), query))):
        print(f"{name}:")
        for movie_id, score in hits:
            print(f"  {score:.3f}  {names[movie_id]}")


if __name__ == "__main__":
    main()
