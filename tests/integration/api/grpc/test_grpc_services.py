"""The other tei.v1 services over gRPC, each against its HTTP twin: Info, EmbedSparse and EmbedAll (with streams) on
the BGE-M3-shaped fixture, Tokenize and Decode (with streams), Rerank and RerankStream, Predict (UNIMPLEMENTED);
the API key as metadata, the health service, and a call made through server reflection alone (what grpcurl does)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from embedding_server.api.grpc import tei_pb2 as pb
from tests.integration.api.grpc.test_grpc_embed import TEXTS, cosine, error_of

QUERY = "what do embedding models map"
DOCS = ["embedding models map sentences to dense vectors", "the quick brown fox", "vector search engines rank"]


def test_info(minilm):
    info = minilm.stub("Info").Info(pb.InfoRequest())
    http = minilm.http.get("/info").json()
    assert (info.model_id, info.model_dtype, info.version) == (http["model_id"], "float32", http["version"])
    assert info.model_type == pb.MODEL_TYPE_EMBEDDING
    assert (info.max_input_length, info.max_batch_tokens, info.max_client_batch_size) == (
        http["max_input_length"], http["max_batch_tokens"], http["max_client_batch_size"])
    assert info.max_batch_requests == http["max_batch_requests"] and not info.HasField("sha")


def test_sparse_and_all_on_bge_m3_shape(serve, grpc_models):
    served = serve(models_dir=grpc_models, model="tiny-bge-m3")
    embed = served.stub("Embed")
    want_sparse = served.http.post("/embed_sparse", json={"inputs": TEXTS}).json()
    want_all = served.http.post("/embed_all", json={"inputs": TEXTS}).json()
    sparse = [embed.EmbedSparse(pb.EmbedSparseRequest(inputs=t)) for t in TEXTS]
    streamed = list(embed.EmbedSparseStream(iter(pb.EmbedSparseRequest(inputs=t) for t in TEXTS)))
    for got in (sparse, streamed):
        for answer, want in zip(got, want_sparse):
            entries = {e.index: e.value for e in answer.sparse_embeddings}
            assert entries == pytest.approx({e["index"]: e["value"] for e in want if e["value"]}, abs=1e-6)
    for got in ([embed.EmbedAll(pb.EmbedAllRequest(inputs=t)) for t in TEXTS],
                list(embed.EmbedAllStream(iter(pb.EmbedAllRequest(inputs=t) for t in TEXTS)))):
        for answer, want in zip(got, want_all):
            rows = np.array([list(t.embeddings) for t in answer.token_embeddings])
            assert rows.shape == np.array(want).shape and np.allclose(rows, want, atol=1e-5)
            assert answer.metadata.compute_tokens > 0


def test_sparse_without_a_sparse_head_is_failed_precondition(minilm):
    error = error_of(lambda: minilm.stub("Embed").EmbedSparse(pb.EmbedSparseRequest(inputs="x")))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION  # TEI's Backend error over gRPC
    assert error.details() == "Backend error: Model is not an embedding model with SPLADE pooling"


def test_tokenize_and_decode_with_streams(minilm):
    tokenize = minilm.stub("Tokenize")
    text = "Héllo wörld 🚀"
    want = minilm.http.post("/tokenize", json={"inputs": [text, "x"], "add_special_tokens": True}).json()
    answers = [tokenize.Tokenize(pb.EncodeRequest(inputs=t, add_special_tokens=True)) for t in (text, "x")]
    assert answers == list(tokenize.TokenizeStream(iter(pb.EncodeRequest(inputs=t, add_special_tokens=True)
                                                         for t in (text, "x"))))
    for answer, tokens in zip(answers, want):
        got = [{"id": t.id, "text": t.text, "special": t.special, "start": t.start if t.HasField("start") else None,
                "stop": t.stop if t.HasField("stop") else None} for t in answer.tokens]
        assert got == tokens
    bare = tokenize.Tokenize(pb.EncodeRequest(inputs=text))  # add_special_tokens false: proto3's default
    assert [t.text for t in bare.tokens] == [t["text"] for t in want[0][1:-1]]
    ids = [t.id for t in answers[0].tokens]
    assert tokenize.Decode(pb.DecodeRequest(ids=ids, skip_special_tokens=True)).text == minilm.http.post(
        "/decode", json={"ids": ids, "skip_special_tokens": True}).json()[0]
    assert [a.text for a in tokenize.DecodeStream(iter([pb.DecodeRequest(ids=ids), pb.DecodeRequest(ids=ids[1:2])]))] \
        == minilm.http.post("/decode", json={"ids": [ids, ids[1:2]], "skip_special_tokens": False}).json()
    for call in (lambda: tokenize.Tokenize(pb.EncodeRequest(inputs="")), lambda: tokenize.Decode(pb.DecodeRequest())):
        assert error_of(call).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rerank_and_rerank_stream_equal_http(serve, grpc_models):
    served = serve(models_dir=grpc_models, model="tiny-bert")
    rerank = served.stub("Rerank")
    want = served.http.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}).json()
    answer = rerank.Rerank(pb.RerankRequest(query=QUERY, texts=DOCS, return_text=True))
    assert [(r.index, r.text) for r in answer.ranks] == [(w["index"], w["text"]) for w in want]
    assert np.allclose([r.score for r in answer.ranks], [w["score"] for w in want], atol=1e-6)
    assert answer.metadata.compute_chars == len(QUERY) * len(DOCS) + sum(map(len, DOCS))
    assert answer.metadata.inference_time_ns > 0 and answer.metadata.compute_tokens > 0
    messages = [pb.RerankStreamRequest(query=QUERY, text=d, raw_scores=True) for d in DOCS]
    streamed = rerank.RerankStream(iter(messages))
    raw = served.http.post("/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}).json()
    assert [(r.index, r.HasField("text")) for r in streamed.ranks] == [(w["index"], False) for w in raw]
    assert np.allclose([r.score for r in streamed.ranks], [w["score"] for w in raw], atol=1e-5)
    empty = error_of(lambda: rerank.Rerank(pb.RerankRequest(query=QUERY)))
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT and empty.details() == "`texts` cannot be empty"
    assert error_of(lambda: rerank.RerankStream(iter([]))).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_rerank_without_a_reranker_and_predict(minilm):
    error = error_of(lambda: minilm.stub("Rerank").Rerank(pb.RerankRequest(query="q", texts=["a"])))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "not a re-ranker" in error.details()
    predict = minilm.stub("Predict")
    for call in (lambda: predict.Predict(pb.PredictRequest(inputs="x")),
                 lambda: predict.PredictPair(pb.PredictPairRequest(inputs=["a", "b"])),
                 lambda: predict.PredictStream(iter([pb.PredictRequest(inputs="x")]))):
        error = error_of(call)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED and "classification" in error.details()


def test_key_required_health_and_reflection_open(serve, grpc_models):
    served = serve(models_dir=grpc_models, model="tiny-bert", api_key="k1,k2")
    embed = served.stub("Embed").Embed
    for metadata in (None, (("authorization", "Bearer nope"),), (("authorization", "k1"),)):
        error = error_of(lambda: embed(pb.EmbedRequest(inputs="x"), metadata=metadata))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED and "API key" in error.details()
    assert error_of(lambda: served.stub("Info").Info(pb.InfoRequest())).code() == grpc.StatusCode.UNAUTHENTICATED
    stream = served.stub("Embed").EmbedStream(iter([pb.EmbedRequest(inputs="x")]))
    assert error_of(lambda: stream).code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(embed(pb.EmbedRequest(inputs="x"), metadata=(("authorization", "Bearer k2"),)).embeddings) == 32
    health = health_pb2_grpc.HealthStub(served.channel)
    status = {name: health.Check(health_pb2.HealthCheckRequest(service=name)).status
              for name in ("", "tei.v1.Embed", "tei.v1.Info", "tei.v1.Tokenize", "tei.v1.Rerank", "tei.v1.Predict")}
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert status == {"": serving, "tei.v1.Embed": serving, "tei.v1.Info": serving, "tei.v1.Tokenize": serving,
                      "tei.v1.Rerank": serving, "tei.v1.Predict": not_serving}  # tiny-reranker is served too
    unknown = error_of(lambda: health.Check(health_pb2.HealthCheckRequest(service="nope")))
    assert unknown.code() == grpc.StatusCode.NOT_FOUND
    # Reflection alone (no generated code), as grpcurl does: list the services, build the request, call Embed.
    pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(served.channel))
    method = pool.FindServiceByName("tei.v1.Embed").FindMethodByName("Embed")
    request_class = message_factory.GetMessageClass(method.input_type)
    answer_class = message_factory.GetMessageClass(method.output_type)
    call = served.channel.unary_unary("/tei.v1.Embed/Embed", request_serializer=lambda m: m.SerializeToString(),
                                      response_deserializer=answer_class.FromString)
    answer = call(request_class(inputs="x"), metadata=(("authorization", "Bearer k1"),))
    assert cosine(answer.embeddings, embed(pb.EmbedRequest(inputs="x"), metadata=(("authorization", "Bearer k1"),))
                  .embeddings) >= 0.99999
    names = {s.full_name for s in pool.FindFileContainingSymbol("tei.v1.Embed").services_by_name.values()}
    assert names == {"tei.v1.Info", "tei.v1.Embed", "tei.v1.Predict", "tei.v1.Rerank", "tei.v1.Tokenize"}


def test_a_port_in_use_stops_the_start(empty_models_dir):
    import socket

    from fastapi.testclient import TestClient

    from embedding_server.app import create_app
    from embedding_server.settings import Settings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        client = TestClient(create_app(Settings(models_dir=empty_models_dir, grpc_port=port)))
        with pytest.raises(OSError, match=f"EMBED_GRPC_PORT.*127.0.0.1:{port}"):
            client.__enter__()
