"""The one error table and its rendering in the OpenAI (/v1), Ollama and TEI dialects."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from embedding_server.api.errors import TEI_STATUSES, ApiError, dialect_of, install_error_handlers, mapping_for
from embedding_server.engine import errors as e

# kind -> (error, status, openai type, openai code, Ollama status)
CASES = {
    "not-found": (e.ModelNotFound("x"), 404, "invalid_request_error", "model_not_found", 404),
    "context": (e.ContextLengthExceeded("too long", param="input"), 400, "invalid_request_error",
                "context_length_exceeded", 400),
    "limit": (e.LimitExceeded("too many", param="input"), 400, "invalid_request_error", "limit_exceeded", 400),
    "invalid": (e.InvalidInput("bad input", param="input"), 400, "invalid_request_error", None, 400),
    "overloaded": (e.Overloaded("server busy"), 429, "rate_limit_error", "server_busy", 503),
    "unavailable": (e.ModelUnavailable("model down"), 503, "server_error", "model_unavailable", 503),
    "inference": (e.InferenceFailed("inference failed"), 500, "server_error", "inference_failed", 500),
    "engine": (e.EngineError("engine trouble"), 500, "server_error", None, 500),
}


class Item(BaseModel):
    n: int


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    for prefix in ("/v1", "/api"):
        @app.get(f"{prefix}/raise/{{kind}}")
        async def raise_kind(kind: str):
            raise CASES[kind][0]

        @app.get(f"{prefix}/crash")
        async def crash():
            raise RuntimeError("secret detail /etc/passwd")

        @app.get(f"{prefix}/unauthorized")
        async def unauthorized():
            raise ApiError(401, "invalid API key", code="invalid_api_key")

        @app.post(f"{prefix}/items")
        async def items(item: Item):
            return {"n": item.n}

    return app


@pytest.fixture(scope="module")
def client():
    with TestClient(_app(), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize("kind", CASES)
def test_mapping_for(kind):
    error, status, kind_type, code, ollama_status = CASES[kind]
    m = mapping_for(error)
    assert (m.status, m.openai_type, m.openai_code) == (status, kind_type, code)
    assert (m.ollama_status or m.status) == ollama_status


def test_mapping_for_subclass_falls_back_to_parent():
    class Custom(e.ContextLengthExceeded):
        pass

    class Other(e.EngineError):
        pass

    assert mapping_for(Custom("x")).openai_code == "context_length_exceeded"
    assert mapping_for(Other("x")).status == 500


@pytest.mark.parametrize("kind", CASES)
def test_openai_dialect(client, kind):
    error, status, kind_type, code, _ = CASES[kind]
    r = client.get(f"/v1/raise/{kind}")
    assert r.status_code == status
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"message": error.message, "type": kind_type, "param": error.param, "code": code}}


@pytest.mark.parametrize("kind", CASES)
def test_ollama_dialect(client, kind):
    error, _, _, _, ollama_status = CASES[kind]
    r = client.get(f"/api/raise/{kind}")
    assert r.status_code == ollama_status
    assert r.json() == {"error": error.message}


def test_overloaded_status_and_retry_after(client):
    openai = client.get("/v1/raise/overloaded")
    ollama = client.get("/api/raise/overloaded")
    assert (openai.status_code, ollama.status_code) == (429, 503)
    assert openai.headers["retry-after"] == ollama.headers["retry-after"] == str(e.Overloaded.retry_after_seconds)
    assert "retry-after" not in client.get("/v1/raise/unavailable").headers


def test_model_not_found_message(client):
    assert client.get("/api/raise/not-found").json() == {"error": "model 'x' not found"}
    assert client.get("/v1/raise/not-found").json()["error"]["param"] == "model"


@pytest.mark.parametrize("prefix", ["/v1", "/api"])
def test_unexpected_error_is_generic_500(client, prefix, caplog):
    with caplog.at_level(logging.ERROR):
        r = client.get(f"{prefix}/crash")
    assert r.status_code == 500
    for leak in ("Traceback", "secret", "passwd", "RuntimeError", 'File "'):
        assert leak not in r.text
    body = r.json()
    message = body["error"]["message"] if prefix == "/v1" else body["error"]
    assert message == "internal server error"
    if prefix == "/v1":
        assert body["error"]["type"] == "server_error"
    assert any("secret detail" in (rec.exc_text or str(rec.exc_info)) for rec in caplog.records)


@pytest.mark.parametrize("kind", ["unavailable", "inference", "engine"])
def test_engine_5xx_has_no_traceback(client, kind):
    for prefix in ("/v1", "/api"):
        r = client.get(f"{prefix}/raise/{kind}")
        assert r.status_code >= 500
        assert "Traceback" not in r.text and 'File "' not in r.text


def test_api_error_rendering(client):
    r = client.get("/v1/unauthorized")
    assert r.status_code == 401
    assert r.json() == {"error": {"message": "invalid API key", "type": "authentication_error", "param": None,
                                  "code": "invalid_api_key"}}
    assert client.get("/api/unauthorized").json() == {"error": "invalid API key"}


def test_validation_error_openai_shape(client):
    r = client.post("/v1/items", json={"n": "seven"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "n"
    assert error["code"] is None
    assert error["message"].startswith("invalid request: n: ")


def test_validation_error_ollama_shape(client):
    r = client.post("/api/items", json={})
    assert r.status_code == 400
    body = r.json()
    assert list(body) == ["error"] and isinstance(body["error"], str)
    assert body["error"].startswith("invalid request: n: ")


@pytest.mark.parametrize("prefix", ["/v1", "/api"])
def test_invalid_json_body(client, prefix):
    r = client.post(f"{prefix}/items", content=b'{"n": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    body = r.json()
    message = body["error"]["message"] if prefix == "/v1" else body["error"]
    assert message == "invalid JSON in request body"


def test_valid_request_still_works(client):
    assert client.post("/v1/items", json={"n": 3}).json() == {"n": 3}


@pytest.mark.parametrize("prefix, shape", [("/v1", dict), ("/api", str)])
def test_http_errors_in_dialect(client, prefix, shape):
    r = client.get(f"{prefix}/no-such-route")
    assert r.status_code == 404
    assert isinstance(r.json()["error"], shape)
    r = client.get(f"{prefix}/items")
    assert r.status_code == 405
    if prefix == "/v1":
        assert r.json()["error"]["type"] == "invalid_request_error"


# ----- TEI: {"error", "error_type"} with TEI's statuses, on TEI's routes -----------------------------------------
# kind -> (TEI status, TEI error_type)
TEI_CASES = {"not-found": (503, "Unhealthy"), "context": (422, "Validation"), "limit": (422, "Validation"),
             "invalid": (422, "Validation"), "overloaded": (429, "Overloaded"), "unavailable": (503, "Unhealthy"),
             "inference": (424, "Backend"), "engine": (424, "Backend")}


def _tei_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/embed")
    async def raise_kind(kind: str):
        raise CASES[kind][0]

    @app.post("/tokenize")
    async def items(item: Item):
        return {"n": item.n}

    @app.post("/")
    async def crash():
        raise RuntimeError("secret detail /etc/passwd")

    @app.get("/info")
    async def api_error(status: int):
        raise ApiError(status, "refused")

    return app


@pytest.fixture(scope="module")
def tei():
    with TestClient(_tei_app(), raise_server_exceptions=False) as c:
        yield c


def test_dialect_of():
    assert dialect_of("/v1/embeddings", "POST") == "openai"
    assert [dialect_of(p, "POST") for p in ("/embed", "/embed_all", "/embed_sparse", "/similarity", "/tokenize",
                                            "/decode", "/info", "/")] == ["tei"] * 8
    assert dialect_of("/", "GET") == dialect_of("/api/embed", "POST") == dialect_of("/nothing", "POST") == "ollama"


@pytest.mark.parametrize("kind", TEI_CASES)
def test_tei_dialect(tei, kind):
    status, error_type = TEI_CASES[kind]
    r = tei.get(f"/embed?kind={kind}")
    assert r.status_code == status and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": CASES[kind][0].message, "error_type": error_type}
    assert TEI_STATUSES[error_type] == status


def test_tei_overloaded_has_retry_after(tei):
    assert tei.get("/embed?kind=overloaded").headers["retry-after"] == str(e.Overloaded.retry_after_seconds)


def test_tei_validation_errors_are_422_and_broken_json_400(tei):
    r = tei.post("/tokenize", json={"n": "seven"})
    assert r.status_code == 422 and r.json()["error_type"] == "Validation"
    assert r.json()["error"].startswith("invalid request: n: ")
    r = tei.post("/tokenize", content=b'{"n": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json() == {"error": "invalid JSON in request body", "error_type": "Validation"}


def test_tei_unexpected_error_is_generic(tei):
    r = tei.post("/")
    assert r.status_code == 500 and r.json() == {"error": "internal server error", "error_type": "Backend"}
    assert "secret" not in r.text and "Traceback" not in r.text


@pytest.mark.parametrize("status, error_type", [(400, "Empty"), (401, "Validation"), (413, "Validation"),
                                                (422, "Validation"), (424, "Backend"), (429, "Overloaded"),
                                                (503, "Unhealthy"), (500, "Backend")])
def test_tei_api_errors_by_status(tei, status, error_type):
    r = tei.get(f"/info?status={status}")
    assert r.status_code == status and r.json() == {"error": "refused", "error_type": error_type}


def test_tei_http_errors(tei):
    r = tei.get("/tokenize")
    assert r.status_code == 405 and r.json()["error_type"] == "Validation"
