"""Hostile clients, in process (issue #24, section 3): the API key is checked before the body is read, /tokenize's
output is capped and /tokenize and /decode stop when the client leaves, a client's path cannot forge log lines,
and the body-limit 413 carries CORS headers. ASGI-level calls show what the app reads of a request."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import pytest
from fastapi.testclient import TestClient

from embedding_server.app import create_app
from embedding_server.settings import Settings

KEY = "k1"
MESSAGE = "invalid or missing API key (send Authorization: Bearer <key> or X-API-Key: <key>)"
ORIGIN = "http://app.example"
OPENAI_401 = {"error": {"message": MESSAGE, "type": "authentication_error", "param": None, "code": "invalid_api_key"}}
# Protected POST routes of every dialect and the 401 each answers (/embeddings: FastAPI's shape, whatever the body).
REFUSALS = {
    "/api/embed": {"error": MESSAGE}, "/api/embeddings": {"error": MESSAGE}, "/api/show": {"error": MESSAGE},
    "/v1/embeddings": OPENAI_401, "/v2/rerank": OPENAI_401, "/embeddings": {"detail": MESSAGE},
    "/embed": {"error": MESSAGE, "error_type": "Validation"}, "/tokenize": {"error": MESSAGE, "error_type": "Validation"},
    "/rerank": {"error": MESSAGE, "error_type": "Validation"}, "/": {"error": MESSAGE, "error_type": "Validation"},
}


async def asgi_call(app, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                    leave: asyncio.Event | None = None) -> dict:
    """One request straight into the app. The body is handed over on the first ``receive``; later calls wait
    for ``leave`` (the client disconnects). Returns the status, headers, body and how often the app asked for
    the body."""
    asked, answer = [], {"status": None, "headers": {}, "body": b""}

    async def receive():
        asked.append(1)
        if len(asked) == 1:
            return {"type": "http.request", "body": body, "more_body": False}
        await (leave or asyncio.Event()).wait()
        return {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
            answer["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    raw = {"content-type": "application/json", "content-length": str(len(body)), **(headers or {})}
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "headers": [(b"host", b"t")] + [(k.encode(), v.encode()) for k, v in raw.items()],
             "client": ("127.0.0.1", 1), "server": ("t", 80)}
    await app(scope, receive, send)
    return {**answer, "body_reads": len(asked)}


@pytest.fixture
def keyed(make_client, tiny_models_dir):
    return make_client(models_dir=tiny_models_dir, model="tiny-bert", api_key=f"{KEY},k2", cors_origins=ORIGIN)


@pytest.mark.parametrize("path", list(REFUSALS))
def test_unauthenticated_request_is_refused_before_its_body_is_read(path, keyed):
    """401 in the route's own error shape, the body never asked for: an unauthenticated client cannot make the
    server read (let alone JSON-parse) what it sends."""
    body = json.dumps({"model": "tiny-bert", "input": ["x"] * 1000}).encode()
    for headers in ({}, {"x-api-key": "wrong"}, {"authorization": "Bearer wrong"}):
        got = keyed.portal.call(asgi_call, keyed.app, "POST", path, body, headers)
        assert got["status"] == 401 and json.loads(got["body"]) == REFUSALS[path], (path, got)
        assert got["body_reads"] == 0, f"{path}: the body was read before the key was checked"


def test_the_key_still_lets_requests_in_and_open_routes_stay_open(keyed):
    """A right key (either header) is served; /health, /metrics and CORS preflight need none; the 401 carries
    CORS headers and keeps its route's label in the access metrics."""
    body = {"model": "tiny-bert", "input": "x"}
    assert keyed.post("/api/embed", json=body, headers={"X-API-Key": KEY}).status_code == 200
    assert keyed.post("/embed", json={"inputs": "x"}, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert keyed.get("/health").status_code == 200 and keyed.get("/metrics").status_code == 200
    preflight = keyed.options("/api/embed", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "x-api-key"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
    refused = keyed.post("/api/embed", json=body, headers={"Origin": ORIGIN})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    assert 'embed_http_requests_total{route="/api/embed",status="401"}' in keyed.get("/metrics").text


def test_tokenize_output_is_capped_by_max_request_tokens(make_client, tiny_models_dir):
    """The answer is ~60 bytes of JSON per token: EMBED_MAX_REQUEST_TOKENS bounds the tokens of all texts."""
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", max_request_tokens=20)
    small = c.post("/tokenize", json={"inputs": ["one", "two"]})
    assert small.status_code == 200 and sum(map(len, small.json())) <= 20
    r = c.post("/tokenize", json={"inputs": ["word " * 15, "word " * 15]})  # 2 x (15 words + 2 special) tokens
    assert r.status_code == 422 and r.json()["error_type"] == "Validation", r.text
    total = re.fullmatch(r"too many tokens: (\d+), limit max_request_tokens=20", r.json()["error"])
    assert total and int(total[1]) >= 34, r.json()


@pytest.mark.parametrize("path, body, method", [("/tokenize", {"inputs": "x"}, "tokens"),
                                                ("/decode", {"ids": [1, 2]}, "decode")])
def test_tokenizer_work_stops_when_the_client_leaves(path, body, method, make_client, tiny_models_dir, monkeypatch):
    """The client disconnects while its texts are being tokenized (decoded): the work is cancelled and
    nothing is answered (the 499 nobody reads)."""
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert")
    seen = {"cancelled": False}

    async def scenario():
        started, leave = asyncio.Event(), asyncio.Event()

        async def slow(*args, **kwargs):
            started.set()
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                seen["cancelled"] = True
                raise
            return [[]]

        monkeypatch.setattr(c.app.state.engine, method, slow)
        call = asyncio.create_task(asgi_call(c.app, "POST", path, json.dumps(body).encode(), leave=leave))
        await asyncio.wait_for(started.wait(), 10)
        leave.set()
        return await asyncio.wait_for(call, 5)

    got = c.portal.call(scenario)
    assert seen["cancelled"] and got["status"] == 499, got


def test_log_lines_escape_the_client_path(tiny_models_dir, caplog):
    """An unexpected error logs the path: percent-decoded control characters and line separators in it are
    escaped, so a client cannot forge or rewrite log lines."""
    app = create_app(Settings(models_dir=tiny_models_dir, model="tiny-bert"))  # no lifespan: no model needed

    def failing(inner):  # an unexpected error on any path, whatever it holds
        async def asgi(scope, receive, send):
            raise RuntimeError("boom")
        return asgi

    app.add_middleware(failing)
    forged = "%0A%0D%1B[2K%0B%0C%C2%85%E2%80%A8INFO embedding_server: forged"
    with caplog.at_level(logging.ERROR, logger="embedding_server"):
        assert TestClient(app, raise_server_exceptions=False).get(f"/x{forged}").status_code == 500
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unhandled error on")]
    assert line.isprintable() and "\\n" in line and "\\x1b[2K" in line and "forged" in line, repr(line)


@pytest.mark.parametrize("path, shape", [("/api/embed", {"error"}), ("/v1/embeddings", {"error"}),
                                         ("/embeddings", {"detail"}), ("/embed", {"error", "error_type"})])
def test_body_limit_413_carries_cors_headers_and_the_route_shape(path, shape, make_client, tiny_models_dir):
    c = make_client(models_dir=tiny_models_dir, model="tiny-bert", max_body_bytes=1024, cors_origins=ORIGIN)
    r = c.post(path, content=json.dumps({"input": "x" * 2000, "texts": ["x"]}), headers={"Origin": ORIGIN})
    assert r.status_code == 413 and set(r.json()) == shape and "max_body_bytes=1024" in r.text, r.text
    assert r.headers.get("access-control-allow-origin") == ORIGIN, r.headers
