"""/metrics in Prometheus format and the one-line JSON access log."""

from __future__ import annotations

import json
import logging

from prometheus_client.parser import text_string_to_metric_families


def scrape(client) -> dict[str, list]:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(samples, name, **labels) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_count_requests_inputs_tokens_batches(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert")
    before = scrape(c)
    r = c.post("/api/embed", json={"model": "tiny-bert", "input": ["one", "two words", "three more words"]})
    tokens = r.json()["prompt_eval_count"]
    c.post("/api/embed", json={"model": "nope", "input": "x"})
    after = scrape(c)
    assert value(after["embed_inputs"], "embed_inputs_total", model="tiny-bert") \
        - value(before["embed_inputs"], "embed_inputs_total", model="tiny-bert") == 3
    assert value(after["embed_tokens"], "embed_tokens_total", model="tiny-bert") \
        - value(before["embed_tokens"], "embed_tokens_total", model="tiny-bert") == tokens
    assert value(after["embed_http_requests"], "embed_http_requests_total", route="/api/embed", status="200") >= 1
    assert value(after["embed_http_requests"], "embed_http_requests_total", route="/api/embed", status="404") == 1
    assert value(after["embed_batch_size"], "embed_batch_size_count", model="tiny-bert") >= 1
    assert value(after["embed_inference_seconds"], "embed_inference_seconds_count", model="tiny-bert") >= 1
    assert value(after["embed_model_load_seconds"], "embed_model_load_seconds", model="tiny-bert") > 0
    assert [s.labels for s in after["embed_queue_depth"]] == [{"model": "tiny-bert"}]


def test_access_log_is_one_json_line_without_texts(make_client, tiny_models_dir, caplog):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert")
    with caplog.at_level(logging.INFO, logger="embedding_server.access"):
        c.post("/v1/embeddings", json={"model": "tiny-bert", "input": ["secret text", "more"]})
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "embedding_server.access"]
    assert len(lines) == 1
    line = lines[0]
    assert line["route"] == "/v1/embeddings" and line["status"] == 200 and line["model"] == "tiny-bert"
    assert line["inputs"] == 2 and line["tokens"] > 0 and line["ms"] > 0
    assert "secret" not in json.dumps(line)


def test_access_log_shows_texts_only_when_asked(make_client, tiny_models_dir, caplog):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", log_inputs=True)
    with caplog.at_level(logging.INFO, logger="embedding_server.access"):
        c.post("/api/embed", json={"model": "tiny-bert", "input": "debug me"})
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "embedding_server.access"]
    assert line["texts"] == ["debug me"]


def test_metrics_and_health_stay_open_with_api_key(make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", api_key="k")
    assert c.get("/metrics").status_code == 200 and c.get("/health").status_code == 200
    assert c.get("/v1/models").status_code == 401
