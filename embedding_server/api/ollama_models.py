"""Ollama's model-management routes as an embedding server answers them.

- ``/api/generate`` and ``/api/chat`` without a prompt or messages are how Ollama clients load and unload models
  (``ollama run`` preloads, ``ollama stop`` sends ``keep_alive: 0``): answered as Ollama does (``done_reason``
  "load" / "unload"). With a prompt or messages: 400, this server only embeds.
- ``/api/pull`` of a model in the models folder answers Ollama's success stream; of any other, a 404 saying this
  server never downloads and how to add a folder.
- ``/api/delete``, ``/api/create``, ``/api/copy``, ``/api/push``: 405, models are folders managed on disk.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import Response, StreamingResponse

from ..durations import keep_alive_seconds
from ..engine.errors import ModelNotFound
from .common import engine_of, require_api_key
from .errors import ApiError
from .go_json import ANY, BOOL, DURATION, MAP, STRING, GoStruct, decode
from .responses import json_response
from .schemas import OLLAMA_ERRORS

router = APIRouter(dependencies=[Depends(require_api_key)], responses=OLLAMA_ERRORS, tags=["Ollama models"])

GENERATE = GoStruct("GenerateRequest", {"model": STRING, "prompt": STRING, "keep_alive": DURATION, "images": ANY,
                                        "options": MAP, "stream": BOOL, "system": STRING, "suffix": STRING})
CHAT = GoStruct("ChatRequest", {"model": STRING, "messages": ANY, "keep_alive": DURATION, "options": MAP,
                                "stream": BOOL})
PULL = GoStruct("PullRequest", {"model": STRING, "name": STRING, "insecure": BOOL, "stream": BOOL})
ONLY_EMBEDS = ("this server only embeds: {route} loads or unloads a model when sent without {what} (Ollama's "
               "preload and `ollama stop`); use /api/embed for embeddings")
NO_DOWNLOADS = ("model '{name}' is not in the models folder, and this server never downloads models: copy its "
                "folder (e.g. from ./download-model.sh on a machine with internet) into EMBED_MODELS_DIR; it is "
                "served without a restart")
NOT_MANAGED = ("{route} is not supported: models are folders in EMBED_MODELS_DIR, added, copied and removed on "
               "disk (this server never changes them)")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")


async def _load_or_unload(request: Request, fields: dict) -> tuple[str, str]:
    if not fields.get("model"):
        raise ApiError(400, "model is required", param="model")
    keep_alive = keep_alive_seconds(fields.get("keep_alive"))
    await engine_of(request).preload(fields["model"], keep_alive)
    return fields["model"], "unload" if keep_alive == 0 else "load"


@router.post("/api/generate", summary="Load or unload a model (Ollama's generate without a prompt)")
async def generate(request: Request, body: Any = Body(None)) -> Response:
    fields = decode(body, GENERATE, await request.body())
    if fields.get("prompt") or fields.get("images"):
        raise ApiError(400, ONLY_EMBEDS.format(route="/api/generate", what="a prompt"))
    model, reason = await _load_or_unload(request, fields)
    return json_response({"model": model, "created_at": _now(), "response": "", "done": True, "done_reason": reason})


@router.post("/api/chat", summary="Load or unload a model (Ollama's chat without messages)")
async def chat(request: Request, body: Any = Body(None)) -> Response:
    fields = decode(body, CHAT, await request.body())
    if fields.get("messages"):
        raise ApiError(400, ONLY_EMBEDS.format(route="/api/chat", what="messages"))
    model, reason = await _load_or_unload(request, fields)
    return json_response({"model": model, "created_at": _now(), "message": {"role": "assistant", "content": ""},
                          "done_reason": reason, "done": True})


@router.post("/api/pull", summary="Succeeds for a model in the models folder; this server never downloads")
async def pull(request: Request, body: Any = Body(None)) -> Response:
    fields = decode(body, PULL, await request.body())
    name = fields.get("model") or fields.get("name")
    if not name:
        raise ApiError(400, "model is required", param="model")
    try:
        entry = engine_of(request).registry.resolve(name)
    except ModelNotFound:
        raise ApiError(404, NO_DOWNLOADS.format(name=name), param="model") from None
    if entry.error:
        raise ApiError(400, f"model '{name}' is in the models folder but cannot be served; the server log says why")
    if fields.get("stream") is False:
        return json_response({"status": "success"})
    steps = ("pulling manifest", "verifying sha256 digest", "writing manifest", "success")
    lines = (orjson.dumps({"status": step}) + b"\n" for step in steps)
    return StreamingResponse(lines, media_type="application/x-ndjson")


def _not_managed(route: str):
    async def refuse() -> Response:
        raise ApiError(405, NOT_MANAGED.format(route=route))
    return refuse


for _route, _methods in (("/api/delete", ["DELETE", "POST"]), ("/api/create", ["POST"]), ("/api/copy", ["POST"]),
                         ("/api/push", ["POST"])):
    router.add_api_route(_route, _not_managed(_route), methods=_methods, include_in_schema=False)
