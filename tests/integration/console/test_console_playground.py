"""The console's Playground in a headless browser: the heatmap and PCA against /api/embed and numpy, BGE-M3's sparse
weights and ColBERT matches against /api/encode, the rerank order against /v1/rerank."""

from __future__ import annotations


import httpx
import numpy as np
import pytest

from tests.integration.console.conftest import DEFAULT, M3, RERANKER
from tests.integration.console.pages import DOCS, QUERY, TEXTS, clean, run_playground

pytestmark = pytest.mark.slow  # a live server process and a browser: left out of make test-fast


def test_heatmap_pca_and_token_counts_equal_the_apis(console_server, open_page):
    watched = open_page(f"{console_server}/ui#playground")
    page = watched.page
    run_playground(watched, DEFAULT, TEXTS)
    cells = page.eval_on_selector_all("#heatmap td", "cells => cells.map(c => [+c.dataset.i, +c.dataset.j, "
                                                     "+c.dataset.value, c.textContent])")
    embed = httpx.post(f"{console_server}/api/embed", json={"model": DEFAULT, "input": TEXTS}, timeout=60).json()
    vectors = np.asarray(embed["embeddings"], dtype=np.float64)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit @ unit.T
    assert len(cells) == len(TEXTS) ** 2
    for i, j, value, text in cells:
        assert abs(value - cosines[i, j]) < 1e-9 and text == f"{cosines[i, j]:.3f}"
    assert cosines[0, 1] > cosines[0, 4]  # the cat and the kitten, closer than the stock market

    # the PCA: numpy's, each axis' sign as the page chooses it (its largest coordinate positive)
    got = np.asarray(page.eval_on_selector_all("svg.pca g[data-index]",
                                               "gs => gs.map(g => [+g.dataset.x, +g.dataset.y])"))
    centred = vectors - vectors.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    want = u[:, :2] * s[:2]
    want *= np.sign(want[np.abs(want).argmax(axis=0), [0, 1]])
    assert np.abs(got - want).max() < 1e-6, (got, want)

    counts = page.eval_on_selector_all("#token-counts tbody tr", "rows => rows.map(r => +r.dataset.tokens)")
    assert sum(counts) == embed["prompt_eval_count"] == int(page.text_content("#total-tokens").replace(",", ""))
    watched.screenshot("playground-embed")
    clean(watched)


def test_bge_m3_shows_sparse_tokens_and_colbert_matches(console_server, open_page):
    watched = open_page(f"{console_server}/ui#playground")
    page = watched.page
    texts = ["embedding models map sentences", "dense and sparse vectors", "the quick brown fox"]
    run_playground(watched, M3, texts, wait_for="#colbert-score")
    encoded = httpx.post(f"{console_server}/api/encode", timeout=60,
                         json={"model": M3, "input": texts, "outputs": ["sparse", "colbert"]}).json()
    for i, sparse in enumerate(encoded["sparse"]):
        chips = page.eval_on_selector_all(f"#sparse .tokens[data-text='{i}'] .tok",
                                          "cs => cs.map(c => [+c.dataset.id, +c.dataset.weight])")
        weighted = {token: weight for token, weight in chips if weight > 0}
        want = dict(zip(sparse["indices"], sparse["values"]))
        assert weighted.keys() == want.keys() and weighted
        assert all(abs(weighted[k] - want[k]) < 1e-6 for k in want)
        assert len(chips) > len(weighted)  # special tokens are shown, unweighted
    # ColBERT: query T1, passage T2 by default; then T3 as the passage
    for passage in (1, 2):
        page.select_option("#colbert-passage", str(passage))
        q, p = np.asarray(encoded["colbert"][0]), np.asarray(encoded["colbert"][passage])
        want = (q @ p.T).max(axis=1).mean()
        page.wait_for_function("s => document.getElementById('colbert-score').textContent === s", arg=f"{want:.4f}")
        assert abs(float(page.get_attribute("#colbert-score", "data-score")) - want) < 1e-6
    sims = page.eval_on_selector_all("#colbert-table tbody tr", "rows => rows.map(r => +r.dataset.sim)")
    assert sims == sorted(sims, reverse=True) and len(sims) == min(10, len(encoded["colbert"][0]))
    watched.screenshot("playground-bge-m3")
    clean(watched)


def test_rerank_order_equals_v1_rerank(console_server, open_page):
    watched = open_page(f"{console_server}/ui#playground")
    page = watched.page
    run_playground(watched, RERANKER, query=QUERY, docs=DOCS, wait_for="#rerank-table")
    rows = page.eval_on_selector_all("#rerank-table tbody tr", "rows => rows.map(r => [+r.dataset.index, "
                                                               "+r.dataset.score])")
    want = httpx.post(f"{console_server}/v1/rerank", json={"model": RERANKER, "query": QUERY, "documents": DOCS},
                      timeout=60).json()["results"]
    assert [i for i, _ in rows] == [r["index"] for r in want]
    assert all(abs(s - r["relevance_score"]) < 1e-6 for (_, s), r in zip(rows, want))
    assert len(set(i for i, _ in rows)) == len(DOCS)
    watched.screenshot("playground-rerank")
    clean(watched)
