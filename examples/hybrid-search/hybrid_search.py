"""Hybrid search (dense + sparse) with BGE-M3 served by embedding-server, in Qdrant's local in-process mode.

    python examples/hybrid-search/hybrid_search.py --url http://127.0.0.1:8000 --model bge-m3 "your question"

One request to the server's ``POST /api/encode`` gives each text's dense vector and its sparse lexical
weights (in Qdrant's ``SparseVector`` shape) from a single forward pass. Qdrant keeps both as named
vectors of one point, and a query runs both searches and fuses their rankings (reciprocal rank fusion).
Needs ``pip install qdrant-client requests``; no Qdrant server (``QdrantClient(":memory:")``).
"""

from __future__ import annotations

import argparse

import requests
from qdrant_client import QdrantClient, models

DOCUMENTS = [
    "Rayleigh scattering makes the sky look blue: short wavelengths scatter more in the atmosphere.",
    "To reset your laptop password, open the company portal and choose 'forgot password'.",
    "BGE-M3 gives dense, sparse and multi-vector representations from one forward pass.",
    "Qdrant stores dense and sparse vectors side by side and fuses their results.",
    "The harbour ferry leaves every morning at seven, except on public holidays.",
    "Air-gapped networks have no internet access, so models are copied in on disk.",
]


def encode(url: str, model: str, texts: list[str], api_key: str | None = None) -> dict:
    """Dense vectors and sparse weights for ``texts`` from the server (one pass)."""
    headers = {"X-API-Key": api_key} if api_key else {}
    response = requests.post(f"{url}/api/encode", json={"model": model, "input": texts, "outputs": ["dense", "sparse"]},
                             headers=headers, timeout=600)
    response.raise_for_status()
    return response.json()


def build_index(url: str, model: str, documents: list[str]) -> QdrantClient:
    """An in-process Qdrant collection holding each document's dense and sparse vectors."""
    encoded = encode(url, model, documents)
    client = QdrantClient(":memory:")
    client.create_collection(
        "docs",
        vectors_config={"dense": models.VectorParams(size=len(encoded["dense"][0]), distance=models.Distance.COSINE)},
        sparse_vectors_config={"sparse": models.SparseVectorParams()},
    )
    client.upsert("docs", points=[
        models.PointStruct(id=i, payload={"text": text},
                           vector={"dense": dense, "sparse": models.SparseVector(**sparse)})
        for i, (text, dense, sparse) in enumerate(zip(documents, encoded["dense"], encoded["sparse"]))
    ])
    return client


def search(client: QdrantClient, url: str, model: str, query: str, limit: int = 3) -> list[tuple[str, float]]:
    """The ``limit`` best documents for ``query``: dense and sparse rankings fused (RRF)."""
    encoded = encode(url, model, [query])
    hits = client.query_points(
        "docs",
        prefetch=[models.Prefetch(query=encoded["dense"][0], using="dense", limit=10),
                  models.Prefetch(query=models.SparseVector(**encoded["sparse"][0]), using="sparse", limit=10)],
        query=models.FusionQuery(fusion=models.Fusion.RRF),
        limit=limit,
    ).points
    return [(hit.payload["text"], hit.score) for hit in hits]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("query", nargs="?", default="Why is the sky blue?")
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default="bge-m3")
    args = parser.parse_args()
    client = build_index(args.url, args.model, DOCUMENTS)
    for text, score in search(client, args.url, args.model, args.query):
        print(f"{score:.3f}  {text}")


if __name__ == "__main__":
    main()
