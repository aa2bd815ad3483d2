"""Who computes the vectors: this process's engine (no server needed) or a running server (``--url``)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np


class InProcess:
    """The same engine the server runs, in this process; texts go to it as large requests it batches itself."""

    request_size, concurrency = 512, 2  # two requests in flight keep the worker busy between them

    def __init__(self, settings, model: str | None):
        from ..engine.engine import Engine

        self.engine, self.model = Engine(settings), model

    async def start(self) -> str:
        entry = self.engine.registry.resolve(self.model or self.engine.settings.model)
        await self.engine.ensure_loaded(entry)
        return entry.name

    async def embed(self, texts: list[str]) -> np.ndarray:
        from ..engine.types import EmbedRequest

        return (await self.engine.embed(EmbedRequest(model=self.model, inputs=texts))).embeddings

    async def close(self) -> None:
        await self.engine.lifecycle.stop()
        await asyncio.to_thread(self.engine.stop)


class Remote:
    """A running server, in Ollama's (``/api/embed``) or OpenAI's (``/v1/embeddings``) dialect; requests of
    ``request_size`` texts, ``concurrency`` of them in flight (enough to keep its batches full)."""

    request_size, concurrency = 64, 4

    def __init__(self, url: str, model: str | None, api: str = "ollama", api_key: str | None = None):
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=600, trust_env=False)
        self.model, self.api = model, api

    async def start(self) -> str:
        if self.model:
            return self.model
        if self.api == "openai":
            raise ValueError("--api openai needs --model (OpenAI's requests always name one)")
        r = await self.client.post("/api/embed", json={"input": "warm up"})
        self._check(r)
        self.model = r.json()["model"]
        return self.model

    async def embed(self, texts: list[str]) -> np.ndarray:
        if self.api == "openai":
            r = await self.client.post("/v1/embeddings", json={"model": self.model, "input": texts,
                                                               "encoding_format": "base64"})
            self._check(r)
            data = sorted(r.json()["data"], key=lambda d: d["index"])
            return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in data])
        r = await self.client.post("/api/embed", json={"model": self.model, "input": texts,
                                                       "encoding_format": "base64"})
        self._check(r)
        return np.stack([np.frombuffer(base64.b64decode(v), "<f4") for v in r.json()["embeddings"]])

    @staticmethod
    def _check(response) -> None:
        if response.status_code != 200:
            raise RuntimeError(f"{response.request.url} answered {response.status_code}: {response.text[:300]}")

    async def close(self) -> None:
        await self.client.aclose()
