"""/metrics of the real server process, as Prometheus scrapes it, after one embedding request."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.ops.ops_helpers import sample_sum, scrape
from tests.support.checkpoints import make_tiny_bert
from tests.support.server import running_server

pytestmark = pytest.mark.slow  # a live server process: left out of make test-fast

FAMILIES = {  # family -> (type, a sample it must carry)
    "embed_http_requests": ("counter", "embed_http_requests_total"),
    "embed_inputs": ("counter", "embed_inputs_total"),
    "embed_tokens": ("counter", "embed_tokens_total"),
    "embed_batch_size": ("histogram", "embed_batch_size_bucket"),
    "embed_queue_depth": ("gauge", "embed_queue_depth"),
    "embed_inference_seconds": ("histogram", "embed_inference_seconds_bucket"),
    "embed_model_load_seconds": ("gauge", "embed_model_load_seconds"),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    models = tmp_path_factory.mktemp("metrics-models")
    make_tiny_bert(models / "tiny-bert")
    with running_server(models, model="tiny-bert", log_path=models.parent / "metrics-server.log") as (base, _):
        yield base


def test_metrics_families_after_one_embed_request(server):
    body = {"model": "tiny-bert", "input": ["one", "two words", "three more words"]}
    r = httpx.post(f"{server}/api/embed", json=body, timeout=60)
    assert r.status_code == 200, r.text
    tokens = r.json()["prompt_eval_count"]

    raw = httpx.get(f"{server}/metrics", timeout=10)
    assert raw.status_code == 200 and raw.headers["content-type"].startswith("text/plain")
    for family, (kind, _) in FAMILIES.items():  # the text format names counters with their _total
        exposed = f"{family}_total" if kind == "counter" else family
        assert f"# TYPE {exposed} {kind}\n" in raw.text, f"{family} ({kind}) missing"

    families = scrape(server)
    for family, (_, sample) in FAMILIES.items():
        assert family in families, f"{family} missing from /metrics"
        assert any(s.name == sample for s in families[family]), f"{family} has no {sample} sample"

    assert sample_sum(families, "embed_http_requests_total", route="/api/embed", status="200") == 1
    assert sample_sum(families, "embed_inputs_total", model="tiny-bert") == 3
    assert sample_sum(families, "embed_tokens_total", model="tiny-bert") == tokens
    assert sample_sum(families, "embed_batch_size_sum", model="tiny-bert") == 3
    assert sample_sum(families, "embed_batch_size_count", model="tiny-bert") >= 1
    assert sample_sum(families, "embed_inference_seconds_count", model="tiny-bert") >= 1
    assert sample_sum(families, "embed_inference_seconds_sum", model="tiny-bert") > 0
    assert sample_sum(families, "embed_model_load_seconds", model="tiny-bert") > 0
    assert [s.labels for s in families["embed_queue_depth"]] == [{"model": "tiny-bert"}]
    assert sample_sum(families, "embed_queue_depth", model="tiny-bert") == 0  # nothing waiting afterwards


def test_metrics_count_errors_by_route_and_status(server):
    before = scrape(server)
    httpx.post(f"{server}/api/embed", json={"model": "nope", "input": "x"}, timeout=30)
    httpx.post(f"{server}/v1/embeddings", json={"model": "tiny-bert", "input": "x", "dimensions": 0}, timeout=30)
    after = scrape(server)

    def delta(**labels):
        return sample_sum(after, "embed_http_requests_total", **labels) - \
            sample_sum(before, "embed_http_requests_total", **labels)

    assert delta(route="/api/embed", status="404") == 1
    assert delta(route="/v1/embeddings", status="400") == 1
    assert delta(route="/metrics", status="200") == 1  # the scrape before this one
