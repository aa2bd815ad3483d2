"""tei.v1.Rerank: Rerank (one engine request for the query and its texts) and RerankStream (one query-text pair
per message, each its own engine request, started as it arrives; ``raw_scores`` and ``return_text`` as the first
message says, as TEI). Answers sorted by score, highest first."""

from __future__ import annotations

import time

import grpc
import numpy as np

from ...engine.errors import InvalidInput
from ...engine.rerank import reranker_entry
from ...engine.types import RerankRequest
from ..shared import best_first
from . import tei_pb2 as pb
from . import tei_pb2_grpc as pb_grpc
from .calls import Call, Calls, Refusal, fan_out
from .messages import direction as truncation, metadata


class Rerank(pb_grpc.RerankServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    def _check_reranker(self) -> None:
        """TEI's FAILED_PRECONDITION when no reranker answers a request that names none."""
        engine = self.calls.engine
        try:
            reranker_entry(engine.registry, engine.default_entry(), None)
        except InvalidInput as exc:
            raise Refusal(grpc.StatusCode.FAILED_PRECONDITION, f"model is not a re-ranker model: {exc.message}",
                          424) from None

    async def _score(self, call: Call, query: str, texts: list[str], truncate: bool, direction: int,
                     raw_scores: bool) -> tuple[np.ndarray, int, dict[str, int]]:
        result = await self.calls.engine.rerank(RerankRequest(None, query, texts, truncate, truncation(direction),
                                                              raw_scores))
        call.note(result.model, texts, result.prompt_tokens, [query, *texts], result.timeline)
        return result.scores, result.prompt_tokens, result.timings

    @staticmethod
    def _answer(scores, texts: list[str], return_text: bool, chars: int, tokens: int, started: int,
                timings: dict[str, int]):
        ranks = [pb.Rank(index=int(i), score=float(scores[i]), **({"text": texts[i]} if return_text else {}))
                 for i in best_first(np.asarray(scores))]
        meta, headers = metadata(chars, tokens, started, timings)
        return pb.RerankResponse(ranks=ranks, metadata=meta), headers

    async def Rerank(self, request, context):
        async def work(call: Call):
            started, texts = time.perf_counter_ns(), list(request.texts)
            if not texts:
                raise InvalidInput("`texts` cannot be empty", param="texts")
            self._check_reranker()
            scores, tokens, timings = await self._score(call, request.query, texts, request.truncate,
                                                        request.truncation_direction, request.raw_scores)
            chars = len(request.query) * len(texts) + sum(map(len, texts))
            return self._answer(scores, texts, request.return_text, chars, tokens, started, timings)
        return await self.calls.unary("/tei.v1.Rerank/Rerank", context, work)

    async def RerankStream(self, request_iterator, context):
        """One query-text pair per message, each its own engine request; raw_scores and return_text as the first
        message says (as TEI)."""
        async def work(call: Call):
            started, messages = time.perf_counter_ns(), []
            self._check_reranker()

            async def read():
                async for message in request_iterator:
                    messages.append(message)
                    yield message

            def one(message):
                return self._score(call, message.query, [message.text], message.truncate,
                                   message.truncation_direction, messages[0].raw_scores)

            results = [r async for r in fan_out(read(), one)]
            if not results:
                raise InvalidInput("`texts` cannot be empty", param="texts")
            texts = [m.text for m in messages]
            chars = sum(len(m.query) + len(m.text) for m in messages)
            scores = np.array([float(s[0]) for s, _, _ in results], np.float32)
            mean = {k: sum(r[2].get(k, 0) for r in results) // len(results) for k in ("tokenize", "queue", "inference")}
            return self._answer(scores, texts, messages[0].return_text, chars, sum(t for _, t, _ in results), started,
                                mean)  # the phases averaged over the pairs, as TEI
        return await self.calls.unary("/tei.v1.Rerank/RerankStream", context, work)
