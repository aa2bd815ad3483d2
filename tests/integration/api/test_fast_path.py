"""The hot routes' fast path (api/fast.py) answers exactly as the framework's routes do: the same status, headers
and body (timings aside) and the same access-log line, for the plain requests it serves itself, for the requests it
hands to the framework, and for the engine's errors."""

from __future__ import annotations

import json
import logging

import orjson
import pytest

from embedding_server.api import fast

MODEL = "all-minilm-l6-v2"
LONG = "vector search engines rank documents by cosine similarity " * 40  # over MiniLM's 256 tokens
TIMINGS = {"total_duration", "load_duration", "total_time_ms"}
TIMING_HEADERS = {"content-length", "x-compute-time", "x-total-time"}

# (path, body, served by the fast path itself)
CASES = [
    ("/api/embed", {"model": MODEL, "input": "hello world"}, True),
    ("/api/embed", {"model": MODEL, "input": ["a", "b"], "dimensions": 8, "encoding_format": "base64"}, True),
    ("/api/embed", {"model": MODEL, "input": [], "keep_alive": "5m", "options": {"x": 1}}, True),
    ("/api/embed", {"MODEL": "tiny-xlmr", "input": ["x"], "truncate": True, "unknown": [1]}, True),
    ("/api/embed", {"model": MODEL, "input": LONG, "truncate": False}, True),  # the engine refuses it
    ("/api/embed", {"model": "no-such-model", "input": "x"}, True),  # the engine refuses it
    ("/api/embed", {"model": MODEL, "input": 5}, False),
    ("/api/embed", {"model": MODEL, "input": "x", "truncate": "yes"}, False),
    ("/api/embed", {"model": MODEL, "input": "x", "dimensions": 10**20}, False),  # an integer past 64 bits
    ("/api/embed", None, False),
    ("/v1/embeddings", {"model": MODEL, "input": "hello world", "user": "u"}, True),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64",
                        "dimensions": 16}, True),
    ("/v1/embeddings", {"model": MODEL, "input": [[9906, 1917]]}, True),  # cl100k token ids
    ("/v1/embeddings", {"model": "no-such-model", "input": "x"}, True),
    ("/v1/embeddings", {"model": MODEL, "input": ""}, False),
    ("/v1/embeddings", {"input": "x"}, False),
    ("/v1/embeddings", {"model": MODEL, "input": "x", "encoding_format": "hex"}, False),
    ("/embed", {"inputs": "hello world"}, True),
    ("/embed", {"inputs": ["a", "b"], "normalize": False, "dimensions": 8}, True),
    ("/embed", {"inputs": LONG, "truncate": False}, True),
    ("/embed", {"inputs": [""]}, False),
    ("/embed", {"inputs": 3}, False),
    ("/embeddings", {"texts": ["a", "b"]}, True),
    ("/embeddings", {"texts": ["a"], "normalize": False, "model": "tiny-bert"}, True),
    ("/embeddings", {"texts": []}, False),
    ("/embeddings", {"input": "x", "model": MODEL}, False),  # OpenAI's body on this path
]


def answer(client, path: str, body, headers: dict | None = None, content_type: str | None = "application/json"
           ) -> tuple[int, dict, object]:
    raw = b"" if body is None else json.dumps(body).encode()
    typed = {"content-type": content_type} if content_type else {}
    r = client.post(path, content=raw, headers={**typed, **(headers or {})})
    content = r.json()
    if isinstance(content, dict):
        content = {k: v for k, v in content.items() if k not in TIMINGS}
    return r.status_code, {k: v for k, v in r.headers.items() if k not in TIMING_HEADERS}, content


def access_lines(caplog) -> list[dict]:
    lines = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "embedding_server.access"]
    for line in lines:
        line.pop("ms")
    caplog.clear()
    return lines


@pytest.mark.parametrize("path,body,fast_itself", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_the_fast_path_answers_as_the_framework_does(client, monkeypatch, caplog, served, path, body, fast_itself):
    caplog.set_level(logging.INFO, logger="embedding_server.access")
    via_fast = answer(client, path, body)
    fast_log = access_lines(caplog)
    assert served == [fast_itself]
    monkeypatch.setattr(fast, "HOT_ROUTES", {})  # every request through the framework
    via_framework = answer(client, path, body)
    assert via_fast == via_framework
    assert fast_log == access_lines(caplog) and len(fast_log) == 1


def test_requests_the_middleware_must_see_go_to_the_framework(make_client, tiny_models_dir, served):
    client = make_client(models_dir=tiny_models_dir, model=MODEL, api_key="k1", cors_origins="http://app.example")
    body = {"model": MODEL, "input": "hello"}
    status, _, content = answer(client, "/api/embed", body)
    assert status == 401 and "API key" in content["error"] and served == []  # refused before the body is read
    status, headers, content = answer(client, "/api/embed", body, {"origin": "http://app.example",
                                                                   "authorization": "Bearer k1"})
    assert status == 200 and headers["access-control-allow-origin"] == "http://app.example" and served == []
    status, _, content = answer(client, "/api/embed", body, {"authorization": "Bearer k1"})
    assert status == 200 and len(content["embeddings"]) == 1 and served == [True]
    r = client.post("/v1/embeddings", content=orjson.dumps(body), headers={"authorization": "Bearer k1",
                                                                           "content-type": "text/plain"})
    assert r.status_code == 400 and served == [True]  # not JSON for the framework's OpenAI route: its answer


def test_metrics_count_the_fast_paths_requests(client):
    def count() -> float:
        text = client.get("/metrics").text
        line = next((x for x in text.splitlines()
                     if x.startswith('embed_http_requests_total{route="/v1/embeddings",status="200"}')), None)
        return float(line.split()[-1]) if line else 0.0

    before = count()
    for _ in range(3):
        assert client.post("/v1/embeddings", json={"model": MODEL, "input": "hi"}).status_code == 200
    assert count() == before + 3


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=utf-8"])
@pytest.mark.parametrize("path,body,reads_any_type", [
    ("/api/embed", {"model": MODEL, "input": "hello"}, True),  # Ollama reads any body as JSON
    ("/embeddings", {"texts": ["hello"]}, True),  # as the small services do
    ("/v1/embeddings", {"model": MODEL, "input": "hello"}, False),
    ("/embed", {"inputs": "hello"}, False)])
def test_content_types_are_read_as_the_framework_reads_them(client, monkeypatch, served, path, body, reads_any_type,
                                                              content_type):
    via_fast = answer(client, path, body, content_type=content_type)
    json_typed = content_type is not None and content_type.startswith("application/json")
    assert served == ([True] if reads_any_type or json_typed else [])
    monkeypatch.setattr(fast, "HOT_ROUTES", {})
    assert via_fast == answer(client, path, body, content_type=content_type)
