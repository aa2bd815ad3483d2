"""The web console: ``GET /ui`` (one page, plain HTML, CSS and JavaScript shipped in the package under
``embedding_server/console``: no CDN, no build step) and the JSON it reads that no API route gives.

- ``GET /ui`` and ``GET /ui/static/<file>``: open, like /health (the page holds no data); a strict
  Content-Security-Policy: scripts, styles and requests from this origin only, no inline script or style.
- ``GET /`` from a browser (``Accept`` naming ``text/html``) is redirected to the console; every other client
  still gets Ollama's plain-text banner (the route of api/ollama.py, which this one steps aside for).
- ``GET /ui/api/models`` (models with all their facts, the memory budget), ``GET /ui/api/stats`` (the recent load:
  console_data.LiveStats), ``POST /ui/api/tokenize`` (each text's tokens for a named model): behind the API key
  when one is set, like every data route; the page's own, so left out of the OpenAPI document (they may change
  with the page). Everything else the page does goes through the public API routes
  (/api/embed, /api/encode, /api/generate, /v1/rerank), with the key the user typed (kept in session storage).
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Match

from .. import __version__
from .common import engine_of, require_api_key, until_disconnect
from .console_data import live_stats, models_view
from .errors import ApiError
from .responses import json_response
from .tei import MAX_CHAR_MULTIPLIER

STATIC_DIR = Path(__file__).resolve().parent.parent / "console"

# No inline script or style, nothing from another origin; the page is never framed.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}


def _load_assets() -> dict[str, tuple[bytes, str, str]]:
    """name -> (content, content type, ETag) of every file of the console (read once: they are small)."""
    assets = {}
    for path in sorted(STATIC_DIR.glob("*")):
        if path.is_file() and not path.name.startswith("."):
            content = path.read_bytes()
            kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            assets[path.name] = (content, kind, '"' + hashlib.sha256(content).hexdigest()[:20] + '"')
    return assets


ASSETS = _load_assets()


def _asset(request: Request, name: str) -> Response:
    if name not in ASSETS:
        raise ApiError(404, f"no console file {name!r}")
    content, kind, etag = ASSETS[name]
    headers = {**SECURITY_HEADERS, "ETag": etag}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(content, media_type=kind, headers=headers)


def wants_html(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an ``Accept`` header names ``text/html`` (with a non-zero q): a browser navigating."""
    accept = b",".join(v for k, v in headers if k == b"accept").decode("latin-1").lower()
    for item in accept.split(","):
        kind, *params = (part.strip() for part in item.split(";"))
        if kind == "text/html":
            q = next((p[2:] for p in params if p.startswith("q=")), "1")
            try:
                return float(q) > 0
            except ValueError:
                return True
    return False


class BrowserRoute(APIRoute):
    """A route that matches only requests from a browser (``wants_html``): for the others the router goes on to the
    next route with the same path."""

    def matches(self, scope):
        match, child = super().matches(scope)
        if match is not Match.NONE and not wants_html(scope.get("headers") or []):
            return Match.NONE, {}
        return match, child


@contextlib.asynccontextmanager
async def _sampling(app):
    """Sample the load for the Live view from start-up on (inside the app's lifespan: its engine exists)."""
    stats = live_stats(app)
    stats.start()
    try:
        yield
    finally:
        stats.stop()


router = APIRouter(lifespan=_sampling, include_in_schema=False)
pages = APIRouter(route_class=BrowserRoute, include_in_schema=False)
data = APIRouter(prefix="/ui/api", dependencies=[Depends(require_api_key)], include_in_schema=False)


@pages.get("/", summary="A browser's / goes to the console")
async def to_console() -> Response:
    return RedirectResponse("ui", status_code=302, headers={"Cache-Control": "no-store", "Vary": "Accept"})


@router.get("/ui", summary="The web console")
async def console(request: Request) -> Response:
    return _asset(request, "index.html")


@router.get("/ui/static/{name}", summary="The console's files")
async def static(name: str, request: Request) -> Response:
    return _asset(request, name)


@router.get("/ui/config", summary="What the console needs before any data: whether a key is needed, the health")
async def config(request: Request) -> Response:
    app = request.app
    health = "failed" if app.state.load_error else engine_of(request).health()  # what the open /health says
    return json_response({"api_key_required": bool(app.state.settings.api_keys), "version": __version__,
                          "health": health}, headers=SECURITY_HEADERS)


@data.get("/models", summary="Every model with its facts, and the memory budget (the console's Models view)")
async def models(request: Request) -> Response:
    return json_response(await models_view(engine_of(request)))


@data.get("/stats", summary="Requests, inputs and tokens per second, queue depth and latency per route, recently")
async def stats(request: Request) -> Response:
    live = live_stats(request.app)
    live.start()  # already running when the app's lifespan ran the router's (FastAPI >= 0.112)
    return json_response(live.view())


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = Field(None, description="The model; the default model when left out.")
    input: list[str] = Field(description="Texts.")


@data.post("/tokenize", summary="Each text's tokens for a model, with the model's context length")
async def tokenize(body: TokenizeBody, request: Request) -> Response:
    engine = engine_of(request)
    texts = body.input
    if not texts or any(not t for t in texts):
        raise ApiError(400, "input must be a non-empty list of non-empty strings", param="input")
    if len(texts) > engine.settings.max_inputs:
        raise ApiError(400, f"too many inputs: {len(texts)}, limit max_inputs={engine.settings.max_inputs}",
                       param="input", code="limit_exceeded")
    facts = await engine.facts(body.model, load=True)
    cap = facts.context_length * MAX_CHAR_MULTIPLIER
    if max(len(t) for t in texts) > cap:
        raise ApiError(400, f"an input is longer than {cap} characters", param="input")
    tokens = await until_disconnect(request, engine.tokens(texts, True, None, model=facts.name))
    total, limit = sum(map(len, tokens)), engine.settings.max_request_tokens
    if total > limit:
        raise ApiError(400, f"too many tokens: {total}, limit max_request_tokens={limit}", param="input")
    return json_response({"model": facts.name, "context_length": facts.context_length,
                          "tokens": [[{"id": t.id, "text": t.text, "special": t.special} for t in row]
                                     for row in tokens]})


router.include_router(pages)
router.include_router(data)
