"""The hot embedding routes without the framework's per-request machinery.

POST /api/embed, /v1/embeddings, /embed and /embeddings carry most of the traffic, mostly one query or a few per
request. Through FastAPI each pays ~0.3 ms of event-loop CPU for routing, dependency solving, body parsing and six
middleware layers, on the cores the forward needs. A *plain* request to one of them (a declared body length under
the limit and FAST_BODY_BYTES, a JSON content type where the route needs one, no CORS origin to answer, a valid
key when keys are set, a body that orjson reads and the dialect's own checks accept) is answered here by the same
dialect functions, the same engine call, the same error table and the same access log. Anything else (and every
error found before the engine is called) goes to the framework, replaying the body already read, so that errors
keep their exact messages. The responses are byte-for-byte those of the routes.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from ..engine.errors import EngineError
from ..engine.inputs import small
from ..engine.types import EmbedRequest, EmbedResult
from ..settings import Settings, split_list
from . import ollama, openai, simple, tei, tei_schemas
from .common import access_note, key_accepted, until_gone
from .errors import ClientGone, engine_error_response, unexpected_error_response
from .go_json import decode
from .responses import json_response

Answer = Callable[[EmbedResult, int], "tuple[Any, dict[str, str] | None]"]
# orjson reads integers past 64 bits as floats (json.loads, the framework's reader, as ints): such bodies go there.
_LONG_NUMBER = re.compile(rb"\d{19}")
# Larger bodies are bulk work, whose per-input framework cost is negligible; the framework's JSON reader also
# shares one-character strings that orjson would allocate one by one (a hostile million-element array).
FAST_BODY_BYTES = 256 * 1024


class NotPlain(Exception):
    """This request is not for the fast path: the framework answers it."""


@dataclass(frozen=True)
class HotRoute:
    """One hot route: whether its body must be declared JSON, and how a parsed body becomes the engine's request
    and the engine's result its answer (content, extra headers) given the request's start (perf_counter_ns)."""

    json_only: bool
    prepare: Callable[[Any, bytes, Settings], tuple[EmbedRequest, Answer]]


def _ollama(body: Any, raw: bytes, settings: Settings) -> tuple[EmbedRequest, Answer]:
    internal, encoding = ollama.embed_request(decode(body, ollama.EMBED_REQUEST, raw))
    return internal, lambda result, started: (ollama.embed_answer(internal, result, encoding, started), None)


def _openai(body: Any, raw: bytes, settings: Settings) -> tuple[EmbedRequest, Answer]:
    parsed = openai.EmbeddingsBody.model_validate(body)
    internal = openai.to_request(parsed, settings.max_inputs, settings.max_request_tokens)
    return internal, lambda result, started: (openai.embeddings_answer(parsed, result), None)


def _tei(body: Any, raw: bytes, settings: Settings) -> tuple[EmbedRequest, Answer]:
    internal = tei.embed_request(tei_schemas.EmbedBody.model_validate(body), settings)
    return internal, lambda result, started: (result.embeddings, tei.compute_headers(internal, result, started))


def _simple(body: Any, raw: bytes, settings: Settings) -> tuple[EmbedRequest, Answer]:
    if type(body) is not dict or "input" in body:  # OpenAI's body on this path: the framework's route
        raise NotPlain()
    internal = simple.texts_request(simple.TextsBody.model_validate(body))
    return internal, lambda result, started: (simple.texts_answer(result, started), None)


HOT_ROUTES: dict[str, HotRoute] = {
    "/api/embed": HotRoute(False, _ollama),  # Ollama reads any body as JSON
    "/v1/embeddings": HotRoute(True, _openai),
    "/embed": HotRoute(True, _tei),
    "/embeddings": HotRoute(False, _simple),  # read as JSON whatever its content type
}


def _plain_headers(scope: dict, settings: Settings, json_only: bool) -> bool:
    """Whether the headers leave nothing for the middleware to do: a declared length within the limit, JSON
    where required, no CORS origin (when CORS is on), the key (when keys are set)."""
    length = content_type = None
    for name, value in scope["headers"]:
        if name == b"content-length":
            length = value
        elif name == b"content-type":
            content_type = value
        elif name == b"origin" and settings.cors_origin_list:
            return False
    if length is None or not length.isdigit() or int(length) > min(FAST_BODY_BYTES, settings.max_body_bytes):
        return False
    if json_only and (content_type is None or content_type.split(b";")[0].strip().lower() != b"application/json"):
        return False  # the framework reads no JSON without a JSON content type: its answer
    keys = _api_keys(settings.api_key)
    return not keys or key_accepted(Headers(scope=scope), keys)


@functools.lru_cache(maxsize=4)
def _api_keys(setting: str) -> list[str]:
    """``Settings.api_keys``, split once rather than per request."""
    return split_list(setting)


def _prepare(route: HotRoute, raw: bytes, settings: Settings) -> tuple[EmbedRequest, Answer] | None:
    """The engine's request and the answer's builder, or None if the framework should answer this body."""
    if _LONG_NUMBER.search(raw):
        return None
    try:
        return route.prepare(orjson.loads(raw), raw, settings)
    except Exception:  # noqa: BLE001
        return None


def _replay(chunks: list[bytes], last: dict | None, receive):
    """A ``receive`` giving back the body already read (then ``last``, if reading it ended so), then ``receive``."""
    messages = [{"type": "http.request", "body": b"".join(chunks), "more_body": last is not None}]
    if last is not None:
        messages.append(last)

    async def again() -> dict:
        return messages.pop(0) if messages else await receive()

    return again


class FastApp(FastAPI):
    """The application: FastAPI, with the hot embedding routes' plain requests answered by ``_fast``."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            route = HOT_ROUTES.get(scope["path"])
            if route is not None and getattr(self.state, "engine", None) is not None:
                return await self._fast(route, scope, receive, send)
        await super().__call__(scope, receive, send)

    async def _fast(self, route: HotRoute, scope, receive, send) -> None:
        started_ns = time.perf_counter_ns()
        settings = self.state.settings
        if not _plain_headers(scope, settings, route.json_only):
            return await super().__call__(scope, receive, send)
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left while sending: as the framework answers that
                return await super().__call__(scope, _replay(chunks, message, receive), send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = b"".join(chunks)
        prepared = _prepare(route, raw, settings)
        if prepared is None:  # refused or unusual: the framework says so in the dialect's words
            return await super().__call__(scope, _replay([raw], None, receive), send)
        internal, answer = prepared
        note = None
        try:
            work = self.state.engine.embed(internal)
            result = await (work if small(internal.inputs) else until_gone(receive, work))
            note = access_note(internal, result)
            content, headers = answer(result, started_ns)
            response = json_response(content, headers=headers)
        except EngineError as exc:
            response = engine_error_response(Request(scope), exc)
        except ClientGone:
            response = Response(status_code=499)  # nginx's "client closed request"; nobody reads it
        except Exception:  # noqa: BLE001
            response = unexpected_error_response(Request(scope))
        try:
            await response(scope, receive, send)
        finally:
            self.state.recorder.record("POST", scope["path"], response.status_code,
                                       (time.perf_counter_ns() - started_ns) / 1e9, note, scope["headers"])
