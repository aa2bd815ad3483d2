"""tei.v1.Embed over gRPC next to HTTP: vectors equal /embed's, TEI's request fields, streams answered in order and
batched in the engine like concurrent HTTP requests, TEI's metadata, TEI's status codes."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from embedding_server.api.grpc import tei_pb2 as pb

TEXTS = ["The quick brown fox jumps over the lazy dog.", "Embeddings map text to vectors.", "Ünïcödé 🚀 text"]
LONG = "vector search engines rank documents by cosine similarity " * 8  # over tiny-bert's 32 tokens


def http_embed(served, **body) -> np.ndarray:
    r = served.http.post("/embed", json=body)
    assert r.status_code == 200, r.text
    return np.array(r.json())


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def error_of(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        result = call()
        list(result) if not hasattr(result, "ListFields") else None  # a stream's error comes while reading it
    return caught.value


def test_embed_equals_http_embed_with_metadata(minilm):
    want = http_embed(minilm, inputs=TEXTS)
    for text, vector in zip(TEXTS, want):
        answer, call = minilm.stub("Embed").Embed.with_call(pb.EmbedRequest(inputs=text))
        assert len(answer.embeddings) == 384 and cosine(answer.embeddings, vector) >= 0.99999
        assert np.linalg.norm(answer.embeddings) == pytest.approx(1.0, abs=1e-5)
        tokens = len(minilm.http.post("/tokenize", json={"inputs": text}).json()[0])
        assert (answer.metadata.compute_tokens, answer.metadata.compute_chars) == (tokens, len(text))
        m = answer.metadata
        assert m.inference_time_ns > 0 and 0 < m.tokenization_time_ns + m.queue_time_ns + m.inference_time_ns \
            <= m.total_time_ns
        headers = dict(call.initial_metadata())
        assert headers["x-compute-tokens"] == str(tokens) and headers["x-compute-characters"] == str(len(text))
        assert int(headers["x-total-time"]) == answer.metadata.total_time_ns // 1_000_000
        assert headers["x-compute-time"] == headers["x-total-time"] and headers["x-compute-type"] == "cpu"
        for name, ns in (("tokenization", m.tokenization_time_ns), ("queue", m.queue_time_ns),
                         ("inference", m.inference_time_ns)):
            assert headers[f"x-{name}-time"] == str(ns // 1_000_000)  # TEI's header names, in ms


def test_embed_request_fields(serve, grpc_models):
    served = serve(models_dir=grpc_models, model="tiny-bert")
    embed = served.stub("Embed").Embed
    raw = np.array(embed(pb.EmbedRequest(inputs=TEXTS[0], normalize=False)).embeddings)
    assert np.linalg.norm(raw) > 1.01  # normalize is true unless set (TEI), and false is kept
    assert cosine(raw, http_embed(served, inputs=TEXTS[0], normalize=False)[0]) >= 0.99999
    assert np.allclose(raw, http_embed(served, inputs=TEXTS[0], normalize=False)[0], atol=1e-5)
    cut = embed(pb.EmbedRequest(inputs=TEXTS[0], dimensions=8)).embeddings
    assert len(cut) == 8 and np.allclose(cut, http_embed(served, inputs=TEXTS[0], dimensions=8)[0], atol=1e-6)
    query = embed(pb.EmbedRequest(inputs=TEXTS[1], prompt_name="query")).embeddings
    assert cosine(query, http_embed(served, inputs="query: " + TEXTS[1])[0]) >= 0.99999
    # truncate is sent as is: proto3's default false refuses an over-long input, as TEI does over gRPC
    too_long = error_of(lambda: embed(pb.EmbedRequest(inputs=LONG)))
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT and "context length" in too_long.details()
    for direction, name in ((pb.TRUNCATION_DIRECTION_RIGHT, "Right"), (pb.TRUNCATION_DIRECTION_LEFT, "Left")):
        got = embed(pb.EmbedRequest(inputs=LONG, truncate=True, truncation_direction=direction)).embeddings
        want = http_embed(served, inputs=LONG, truncate=True, truncation_direction=name)[0]
        assert cosine(got, want) >= 0.99999
    right, left = (embed(pb.EmbedRequest(inputs="alpha beta " + LONG, truncate=True, truncation_direction=d))
                   .embeddings for d in (pb.TRUNCATION_DIRECTION_RIGHT, pb.TRUNCATION_DIRECTION_LEFT))
    assert cosine(right, left) < 0.9999
    for bad, words in ((pb.EmbedRequest(inputs=""), "cannot be empty"),
                       (pb.EmbedRequest(inputs="x", dimensions=0), "dimensions"),
                       (pb.EmbedRequest(inputs="x", prompt_name="nope"), "nope")):
        error = error_of(lambda: embed(bad))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in error.details(), error.details()


def test_stream_keeps_order_and_batches_in_the_engine(minilm):
    texts = [f"document number {i}: {TEXTS[i % 3]}" for i in range(96)]
    want = http_embed(minilm, inputs=texts)
    engine = minilm.http.app.state.engine
    sizes, observe = [], engine.on_batch
    engine.on_batch = lambda model, stats: (sizes.append(stats.size), observe(model, stats))
    try:
        answers = list(minilm.stub("Embed").EmbedStream(iter(pb.EmbedRequest(inputs=t) for t in texts)))
    finally:
        engine.on_batch = observe
    assert len(answers) == len(texts)
    assert min(cosine(a.embeddings, w) for a, w in zip(answers, want)) >= 0.99999  # in request order
    assert sum(sizes) == len(texts) and max(sizes) > 1 and len(sizes) < len(texts), sizes  # batched together


def test_stream_error_ends_the_call_with_teis_code(minilm):
    messages = [pb.EmbedRequest(inputs="fine"), pb.EmbedRequest(inputs=""), pb.EmbedRequest(inputs="fine too")]
    stream = minilm.stub("Embed").EmbedStream(iter(messages))
    first = next(stream)
    assert len(first.embeddings) == 384
    with pytest.raises(grpc.RpcError) as caught:
        list(stream)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Input validation error: `inputs` cannot be empty"
    empty = list(minilm.stub("Embed").EmbedStream(iter([])))
    assert empty == []


def test_calls_are_counted_and_logged_like_http(minilm, caplog):
    caplog.set_level("INFO", logger="embedding_server.access")
    minilm.stub("Embed").Embed(pb.EmbedRequest(inputs="counted"))
    error_of(lambda: minilm.stub("Embed").Embed(pb.EmbedRequest(inputs="")))
    list(minilm.stub("Embed").EmbedStream(iter([pb.EmbedRequest(inputs="a"), pb.EmbedRequest(inputs="b")])))
    lines = [r.getMessage() for r in caplog.records if r.name == "embedding_server.access"]
    assert any('"route":"/tei.v1.Embed/Embed","status":200' in line and '"inputs":1' in line for line in lines)
    assert any('"route":"/tei.v1.Embed/Embed","status":400' in line for line in lines), lines
    assert any('"route":"/tei.v1.Embed/EmbedStream","status":200' in line and '"inputs":2' in line
               for line in lines), lines
    assert not any("counted" in line for line in lines)  # texts only with EMBED_LOG_INPUTS
    metrics = minilm.http.get("/metrics").text
    assert 'embed_http_requests_total{route="/tei.v1.Embed/Embed",status="200"}' in metrics
    assert 'embed_http_requests_total{route="/tei.v1.Embed/Embed",status="400"}' in metrics
