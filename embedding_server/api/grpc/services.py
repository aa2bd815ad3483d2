"""TEI's gRPC services (package ``tei.v1``) on our engine: Info, Embed (Embed, EmbedSparse, EmbedAll and their
streams), Rerank (Rerank, RerankStream), Tokenize (Tokenize, Decode and their streams), and Predict, which answers
UNIMPLEMENTED (no classification models are served here). Requests keep TEI's gRPC semantics: ``truncate`` as sent
(proto3's default false: an over-long input is refused, as TEI does over gRPC), ``normalize`` true unless set,
``truncation_direction``, ``prompt_name`` and ``dimensions``; one message is one input (an embed stream's waiting
messages with equal fields share one engine request, each answered as if alone)."""

from __future__ import annotations

import time

import grpc

from ...engine.types import COLBERT, SPARSE, EmbedRequest, EmbedResult
from ..tei_requests import (check_not_empty, check_sparse, check_tokenize_length, embed_request, info_fields,
                            per_token_head)
from . import tei_pb2 as pb
from . import tei_pb2_grpc as pb_grpc
from .calls import Call, Calls, Refusal
from .messages import _DIRECTIONS, direction as _direction, metadata as _metadata, optional as _optional
from .rerank import Rerank


class Info(pb_grpc.InfoServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    async def Info(self, request, context):
        async def work(call: Call):
            fields = await info_fields(self.calls.engine)
            facts = await self.calls.engine.facts(load=True)
            kind = pb.MODEL_TYPE_RERANKER if facts.task == "rerank" else pb.MODEL_TYPE_EMBEDDING
            return pb.InfoResponse(
                version=fields["version"], model_id=fields["model_id"], model_dtype=fields["model_dtype"],
                model_type=kind, max_concurrent_requests=fields["max_concurrent_requests"],
                max_input_length=fields["max_input_length"], max_batch_tokens=fields["max_batch_tokens"],
                max_batch_requests=fields["max_batch_requests"],
                max_client_batch_size=fields["max_client_batch_size"],
                tokenization_workers=fields["tokenization_workers"]), None
        return await self.calls.unary("/tei.v1.Info/Info", context, work)


class Embed(pb_grpc.EmbedServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    async def _embed(self, call: Call, requests: list, **options) -> tuple[EmbedResult, list]:
        """One engine request for ``requests`` (one message, or a stream's fold of messages whose fields are equal):
        the result and each message's (Metadata, headers): its own characters and tokens, the request's timings."""
        started = time.perf_counter_ns()
        inputs = [request.inputs for request in requests]
        check_not_empty(inputs)
        first = requests[0]
        internal: EmbedRequest = embed_request(inputs, first.truncate, _direction(first.truncation_direction),
                                               _optional(first, "prompt_name"), **options)
        result = await self.calls.engine.embed(internal)
        call.note(result.model, inputs, result.prompt_tokens, timeline=result.timeline)
        return result, [_metadata(len(text), tokens, started, result.timings)
                        for text, tokens in zip(inputs, result.token_counts)]

    async def _pooled(self, requests: list, call: Call) -> list:
        normalize = _optional(requests[0], "normalize")
        result, metas = await self._embed(call, requests, normalize=True if normalize is None else normalize,
                                          dimensions=_optional(requests[0], "dimensions"))
        return [(pb.EmbedResponse(embeddings=vector.tolist(), metadata=meta), headers)
                for vector, (meta, headers) in zip(result.embeddings, metas)]

    async def _sparse(self, requests: list, call: Call) -> list:
        await check_sparse(self.calls.engine)
        result, metas = await self._embed(call, requests, outputs=frozenset({SPARSE}))
        return [(pb.EmbedSparseResponse(sparse_embeddings=[pb.SparseValue(index=i, value=w) for i, w in
                                                           zip(ids.tolist(), weights.tolist()) if w != 0.0],
                                        metadata=meta), headers)
                for (ids, weights), (meta, headers) in zip(result.sparse, metas)]

    async def _all(self, requests: list, call: Call) -> list:
        head = await per_token_head(self.calls.engine)
        result, metas = await self._embed(call, requests, outputs=frozenset({head}))
        rows = result.colbert if head == COLBERT else result.token_states
        return [(pb.EmbedAllResponse(token_embeddings=[pb.TokenEmbedding(embeddings=row) for row in one.tolist()],
                                     metadata=meta), headers) for one, (meta, headers) in zip(rows, metas)]

    async def _one(self, handler, request, call: Call):
        return (await handler([request], call))[0]

    async def _answers_only(self, handler, requests: list, call: Call) -> list:
        return [answer for answer, _ in await handler(requests, call)]

    def _folded(self, route: str, context, request_iterator, handler):
        """A stream of embed messages: consecutive waiting messages with the same fields go to the engine as one
        request (``fold_out``), at most max_batch_size of them and FOLD_CHARS_PER_TOKEN x max_batch_tokens
        characters."""
        settings = self.calls.settings
        return self.calls.folded_stream(
            route, context, request_iterator, fold_key, lambda rs, call: self._answers_only(handler, rs, call),
            min(settings.max_batch_size, settings.max_inputs), FOLD_CHARS_PER_TOKEN * settings.max_batch_tokens,
            lambda request: len(request.inputs))

    async def Embed(self, request, context):
        return await self.calls.unary("/tei.v1.Embed/Embed", context, lambda call: self._one(self._pooled, request,
                                                                                             call))

    async def EmbedStream(self, request_iterator, context):
        async for answer in self._folded("/tei.v1.Embed/EmbedStream", context, request_iterator, self._pooled):
            yield answer

    async def EmbedSparse(self, request, context):
        return await self.calls.unary("/tei.v1.Embed/EmbedSparse", context,
                                      lambda call: self._one(self._sparse, request, call))

    async def EmbedSparseStream(self, request_iterator, context):
        async for answer in self._folded("/tei.v1.Embed/EmbedSparseStream", context, request_iterator,
                                         self._sparse):
            yield answer

    async def EmbedAll(self, request, context):
        return await self.calls.unary("/tei.v1.Embed/EmbedAll", context,
                                      lambda call: self._one(self._all, request, call))

    async def EmbedAllStream(self, request_iterator, context):
        async for answer in self._folded("/tei.v1.Embed/EmbedAllStream", context, request_iterator, self._all):
            yield answer


FOLD_CHARS_PER_TOKEN = 16  # a fold's characters: at most this many per token of max_batch_tokens (a cap for long texts)


def fold_key(request) -> tuple | None:
    """What must be equal for stream messages to share one engine request (each embed stream is one service and
    head); None (goes alone, checked as usual) for a message that fails a check made per message."""
    if not request.inputs or request.truncation_direction not in _DIRECTIONS:
        return None
    fields = request.DESCRIPTOR.fields_by_name
    return (request.truncate, request.truncation_direction,
            *(_optional(request, name) for name in ("prompt_name", "normalize", "dimensions") if name in fields))


class Tokenize(pb_grpc.TokenizeServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    async def _tokenize(self, request, call: Call):
        engine, texts = self.calls.engine, [request.inputs]
        check_not_empty(texts)
        await check_tokenize_length(engine, texts)
        tokens = (await engine.tokens(texts, request.add_special_tokens, _optional(request, "prompt_name")))[0]
        return pb.EncodeResponse(tokens=[pb.SimpleToken(id=t.id, text=t.text, special=t.special, start=t.start,
                                                        stop=t.stop) for t in tokens]), None

    async def _decode(self, request, call: Call):
        ids = [list(request.ids)]
        check_not_empty(ids, "input_ids")
        return pb.DecodeResponse(text=(await self.calls.engine.decode(ids, request.skip_special_tokens))[0]), None

    async def _first(self, handler, request, call: Call):
        return (await handler(request, call))[0]

    async def Tokenize(self, request, context):
        return await self.calls.unary("/tei.v1.Tokenize/Tokenize", context, lambda call: self._tokenize(request, call))

    async def TokenizeStream(self, request_iterator, context):
        async for answer in self.calls.stream("/tei.v1.Tokenize/TokenizeStream", context, request_iterator,
                                              lambda r, call: self._first(self._tokenize, r, call)):
            yield answer

    async def Decode(self, request, context):
        return await self.calls.unary("/tei.v1.Tokenize/Decode", context, lambda call: self._decode(request, call))

    async def DecodeStream(self, request_iterator, context):
        async for answer in self.calls.stream("/tei.v1.Tokenize/DecodeStream", context, request_iterator,
                                              lambda r, call: self._first(self._decode, r, call)):
            yield answer


PREDICT_MESSAGE = ("Predict is not served here: this server has no sequence-classification models; cross-encoders "
                   "are served by tei.v1.Rerank")


class Predict(pb_grpc.PredictServicer):
    def __init__(self, calls: Calls):
        self.calls = calls

    async def _refuse(self, call: Call):
        raise Refusal(grpc.StatusCode.UNIMPLEMENTED, PREDICT_MESSAGE, 501)

    async def Predict(self, request, context):
        return await self.calls.unary("/tei.v1.Predict/Predict", context, self._refuse)

    async def PredictPair(self, request, context):
        return await self.calls.unary("/tei.v1.Predict/PredictPair", context, self._refuse)

    async def PredictStream(self, request_iterator, context):
        return await self.calls.unary("/tei.v1.Predict/PredictStream", context, self._refuse)

    async def PredictPairStream(self, request_iterator, context):
        return await self.calls.unary("/tei.v1.Predict/PredictPairStream", context, self._refuse)


SERVICERS = (Info, Embed, Rerank, Tokenize, Predict)
ADDERS = {Info: pb_grpc.add_InfoServicer_to_server, Embed: pb_grpc.add_EmbedServicer_to_server,
          Rerank: pb_grpc.add_RerankServicer_to_server, Tokenize: pb_grpc.add_TokenizeServicer_to_server,
          Predict: pb_grpc.add_PredictServicer_to_server}
