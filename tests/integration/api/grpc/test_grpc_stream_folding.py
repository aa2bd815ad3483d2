"""An embed stream's messages that are waiting (read, not yet submitted) go to the engine folded into one request
when their fields are equal: fewer engine requests than messages, each answer as if unfolded (vectors equal to
/embed's, its own tokens and characters, in order), different fields never folded together, an error in the middle
ends the call after the answers before it, and a lone message is answered at once."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest

from embedding_server.api.grpc import tei_pb2 as pb
from tests.integration.api.grpc.test_grpc_embed import TEXTS, cosine, http_embed

TOO_LONG = "vector search engines rank documents by cosine similarity " * 60  # over MiniLM's context, not a fold's cap


@pytest.fixture
def engine_requests(minilm, monkeypatch):
    """The EmbedRequests the engine is given while the test runs (a seam on the app's engine)."""
    engine, seen = minilm.http.app.state.engine, []
    embed = engine.embed

    async def counted(request):
        seen.append(request)
        return await embed(request)

    monkeypatch.setattr(engine, "embed", counted)
    return seen


def tokens_of(served, text: str) -> int:
    return len(served.http.post("/tokenize", json={"inputs": text}).json()[0])


def test_waiting_messages_are_folded_and_answered_as_unfolded(minilm, engine_requests):
    texts = [f"document number {i}: {TEXTS[i % 3]}" for i in range(96)]
    want = http_embed(minilm, inputs=texts)
    engine_requests.clear()
    answers = list(minilm.stub("Embed").EmbedStream(iter(pb.EmbedRequest(inputs=t) for t in texts)))
    sizes = [len(r.inputs) for r in engine_requests]
    assert sum(sizes) == 96 and len(sizes) < 96 and max(sizes) > 1, sizes  # folded
    assert max(sizes) <= minilm.http.app.state.settings.max_batch_size
    assert [x for r in engine_requests for x in r.inputs] == texts
    assert len(answers) == 96 and min(cosine(a.embeddings, w) for a, w in zip(answers, want)) >= 0.99999  # in order
    for text, answer in list(zip(texts, answers))[::7]:  # each message's own tokens and characters
        assert (answer.metadata.compute_tokens, answer.metadata.compute_chars) == (tokens_of(minilm, text), len(text))
        assert 0 < answer.metadata.inference_time_ns <= answer.metadata.total_time_ns


def test_different_fields_are_not_folded_together(minilm, engine_requests):
    texts = [f"sentence {i} about {TEXTS[i % 3]}" for i in range(96)]
    kinds = [(i // 6) % 4 for i in range(96)]  # runs of six messages with the same fields
    fields = [{"normalize": k != 1, **({"dimensions": 64} if k == 2 else {}),
               **({"truncation_direction": pb.TRUNCATION_DIRECTION_LEFT} if k == 3 else {})} for k in kinds]
    answers = list(minilm.stub("Embed").EmbedStream(
        iter(pb.EmbedRequest(inputs=t, truncate=True, **f) for t, f in zip(texts, fields))))
    kind = dict(zip(texts, kinds))
    assert len(engine_requests) < 96 and all(len({kind[x] for x in r.inputs}) == 1 for r in engine_requests)
    for r in engine_requests:
        k = kind[r.inputs[0]]
        assert (r.normalize, r.dimensions, r.truncation_direction) == (
            k != 1, 64 if k == 2 else None, "left" if k == 3 else "right")
    for i in (0, 7, 13, 19, 90):  # each as its own /embed
        k = kinds[i]
        want = http_embed(minilm, inputs=texts[i], truncate=True, **{"normalize": k != 1, **(
            {"dimensions": 64} if k == 2 else {}), **({"truncation_direction": "Left"} if k == 3 else {})})
        assert np.allclose(answers[i].embeddings, want[0], atol=1e-5)


def test_an_error_in_a_fold_gives_the_answers_before_it_then_its_code(minilm, engine_requests):
    texts = [f"fine sentence {i}" for i in range(30)]
    messages = [pb.EmbedRequest(inputs=t) for t in texts]
    messages.insert(20, pb.EmbedRequest(inputs=TOO_LONG))  # truncate false: refused by the engine, per input
    stream = minilm.stub("Embed").EmbedStream(iter(messages))
    got = []
    with pytest.raises(grpc.RpcError) as caught:
        for answer in stream:
            got.append(answer)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "context length" in caught.value.details()
    assert len(got) == 20 and all(len(a.embeddings) == 384 for a in got)
    alone = [r.inputs for r in engine_requests if r.inputs == [TOO_LONG]]
    assert alone == [[TOO_LONG]]  # alone once: as it came, or retried one by one after its fold failed
    fold = next(r.inputs for r in engine_requests if TOO_LONG in r.inputs and len(r.inputs) > 1)  # sent at once
    retried = [r.inputs for r in engine_requests if len(r.inputs) == 1 and r.inputs[0] in fold]
    assert retried == [[x] for x in fold[:fold.index(TOO_LONG) + 1]]  # one by one up to the failing one


def test_a_lone_message_is_answered_while_the_stream_waits(minilm):
    answered, timed_out = threading.Event(), []

    def messages():
        yield pb.EmbedRequest(inputs=TEXTS[0])
        timed_out.append(not answered.wait(30))  # the stream stays open until the first answer came

    stream = minilm.stub("Embed").EmbedStream(messages())
    first = next(stream)
    answered.set()
    assert list(stream) == [] and timed_out == [False]
    assert cosine(first.embeddings, http_embed(minilm, inputs=TEXTS[0])[0]) >= 0.99999


def test_sparse_and_all_streams_fold_too(serve, grpc_models):
    served = serve(models_dir=grpc_models, model="tiny-bge-m3")
    embed, engine, seen = served.stub("Embed"), served.http.app.state.engine, []
    texts = [f"passage {i}: {TEXTS[i % 3]}" for i in range(40)]
    unary_sparse = [embed.EmbedSparse(pb.EmbedSparseRequest(inputs=t)) for t in texts]
    unary_all = [embed.EmbedAll(pb.EmbedAllRequest(inputs=t)) for t in texts]
    real = engine.embed

    async def counted(request):
        seen.append(len(request.inputs))
        return await real(request)

    engine.embed = counted
    try:
        sparse = list(embed.EmbedSparseStream(iter(pb.EmbedSparseRequest(inputs=t) for t in texts)))
        folded_sparse, seen[:] = list(seen), []
        every = list(embed.EmbedAllStream(iter(pb.EmbedAllRequest(inputs=t) for t in texts)))
    finally:
        del engine.embed
    assert len(folded_sparse) < 40 and len(seen) < 40 and sum(folded_sparse) == sum(seen) == 40
    for got, want in zip(sparse, unary_sparse):
        assert {e.index for e in got.sparse_embeddings} == {e.index for e in want.sparse_embeddings}
        assert np.allclose([e.value for e in got.sparse_embeddings], [e.value for e in want.sparse_embeddings],
                           atol=1e-5)
        assert got.metadata.compute_tokens == want.metadata.compute_tokens
    for got, want in zip(every, unary_all):
        assert len(got.token_embeddings) == len(want.token_embeddings)
        assert np.allclose([r.embeddings for r in got.token_embeddings], [r.embeddings for r in want.token_embeddings],
                           atol=1e-5)
