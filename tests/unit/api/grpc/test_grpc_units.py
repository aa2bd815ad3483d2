"""gRPC pieces on their own: the generated code is what the proto gives, TEI's codes per error type from the one
error table, the stream fan-out (concurrent, in order, bounded, errors), the folding of an embed stream's waiting
messages (equal keys only, bounded, errors found per message, no waiting for a lone one), and no grpc import
without the port."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from embedding_server.api.error_table import ERROR_TABLE, TEI_STATUSES, ApiError
from embedding_server.api.grpc.calls import Call, Refusal, fan_out, fold_out, status_of
from embedding_server.engine import errors as e
from embedding_server.tools import gen_grpc

ROOT = Path(__file__).resolve().parents[4]


def test_generated_code_is_what_the_proto_gives():
    assert gen_grpc.main(["--check"]) == 0, "run: python -m embedding_server.tools.gen_grpc"
    proto = (gen_grpc.PACKAGE / "tei.proto").read_text()
    assert "0d124dc9773be6ac5a9a57d8439aba9bbbf33273" in proto.splitlines()[1]  # the TEI commit it was copied at
    body = proto.split("\n", 3)[3]
    assert body.startswith('syntax = "proto3";\n\npackage tei.v1;') and "//" not in body.split("message Rerank")[0]


# TEI's ErrorType -> gRPC code (router/src/grpc/server.rs) and HTTP status (router/src/http/server.rs)
TEI = {"Unhealthy": ("UNAVAILABLE", 503), "Backend": ("FAILED_PRECONDITION", 424),
       "Overloaded": ("RESOURCE_EXHAUSTED", 429), "Validation": ("INVALID_ARGUMENT", 422),
       "Tokenizer": ("FAILED_PRECONDITION", 422), "Empty": ("INVALID_ARGUMENT", 400)}


@pytest.mark.parametrize("cls, mapping", ERROR_TABLE, ids=[cls.__name__ for cls, _ in ERROR_TABLE])
def test_engine_errors_get_teis_code_and_status(cls, mapping):
    error = cls("x") if cls is not e.ModelNotFound else cls("m")
    code, message, status = status_of(error)
    assert (code.name, status) == TEI[mapping.tei_type] and message == error.message
    assert TEI_STATUSES[mapping.tei_type] == status


def test_api_errors_refusals_and_the_unexpected():
    assert status_of(ApiError(400, "empty"))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert status_of(ApiError(422, "bad"))[::2] == (grpc.StatusCode.INVALID_ARGUMENT, 422)
    assert status_of(ApiError(424, "no head"))[0] == grpc.StatusCode.FAILED_PRECONDITION
    assert status_of(Refusal(grpc.StatusCode.UNAUTHENTICATED, "key", 401)) == (grpc.StatusCode.UNAUTHENTICATED,
                                                                               "key", 401)
    assert status_of(RuntimeError("secret /path")) == (grpc.StatusCode.INTERNAL, "internal server error", 500)


async def _requests(items, gate: asyncio.Event | None = None):
    for item in items:
        yield item
    if gate is not None:
        await gate.wait()


def test_fan_out_runs_concurrently_in_order_and_bounded():
    async def run():
        started, in_flight, peak, release = [], [0], [0], asyncio.Event()

        async def handle(n):
            started.append(n)
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            await release.wait()
            await asyncio.sleep(0.001 * (10 - n))  # later requests finish first
            in_flight[0] -= 1
            return n * 10

        answers = fan_out(_requests(range(10)), handle, limit=4)
        first = asyncio.ensure_future(answers.__anext__())
        while len(started) < 4:  # four run before any is answered: none waits for the one before it
            await asyncio.sleep(0)
        assert started == [0, 1, 2, 3] and not first.done()
        release.set()
        return [await first] + [a async for a in answers], peak[0]

    answers, peak = asyncio.run(run())
    assert answers == [n * 10 for n in range(10)] and peak == 4


def test_fan_out_stops_at_the_first_error_and_cancels_the_rest():
    async def run():
        cancelled = []

        async def handle(n):
            if n == 1:
                raise ValueError("bad one")
            try:
                await asyncio.sleep(0 if n == 0 else 10)
            except asyncio.CancelledError:
                cancelled.append(n)
                raise
            return n

        got = []
        with pytest.raises(ValueError):
            async for answer in fan_out(_requests(range(5)), handle):
                got.append(answer)
        await asyncio.sleep(0)
        return got, cancelled

    got, cancelled = asyncio.run(run())
    assert got == [0] and sorted(cancelled) == [2, 3, 4]


def _folding(items, key=lambda n: 0, fail=(), gate=None, **bounds):
    """Run fold_out over ``items`` (all read at once, then the stream waits for ``gate`` if given): the answers
    (n * 10 each) or the error that ended it, and the folds ``handle`` was given."""
    async def run():
        folds = []

        async def handle(fold):
            folds.append(list(fold))
            await asyncio.sleep(0)
            if any(n in fail for n in fold):
                raise ValueError(f"bad {[n for n in fold if n in fail][0]}")
            return [n * 10 for n in fold]

        got = []
        try:
            async for answer in fold_out(_requests(items, gate), key, handle, size=lambda n: 1,
                                         **{"max_messages": 100, "max_size": 100, **bounds}):
                got.append(answer)
        except ValueError as exc:
            return got, str(exc), folds
        return got, None, folds

    return asyncio.run(run())


def test_fold_out_folds_waiting_messages_in_order_and_bounded():
    got, error, folds = _folding(range(20), max_messages=8)
    assert got == [n * 10 for n in range(20)] and error is None
    # the first two go at once (FOLDS_IN_FLIGHT), the rest waited for one of them: folded, at most 8 at once
    assert folds[:2] == [[0], [1]] and len(folds) < 20 and max(map(len, folds)) == 8
    assert [n for fold in folds for n in fold] == list(range(20))
    got, _, folds = _folding(range(20), max_size=3)  # the size cap (here 1 per message)
    assert got == [n * 10 for n in range(20)] and max(map(len, folds)) == 3


def test_fold_out_folds_only_equal_keys_and_none_goes_alone():
    key = {n: (None if n == 9 else n // 5) for n in range(20)}.get  # runs of five equal keys; 9 is unfoldable
    got, _, folds = _folding(range(20), key=key)
    assert got == [n * 10 for n in range(20)]
    assert all(len({key(n) for n in fold}) == 1 for fold in folds) and [9] in folds, folds
    assert any(len(fold) > 1 for fold in folds)


def test_fold_out_error_gives_the_answers_before_it_then_that_error():
    got, error, folds = _folding(range(20), fail={11, 14})
    assert got == [n * 10 for n in range(11)] and error == "bad 11"
    failed = next(fold for fold in folds if 11 in fold and len(fold) > 1)  # the fold, then one by one up to 11
    retried = folds[folds.index(failed) + 1:]
    assert [f for f in retried if len(f) == 1 and f[0] in failed] == [[n] for n in failed[:failed.index(11) + 1]]


def test_fold_out_does_not_hold_back_a_lone_message():
    async def run():
        gate = asyncio.Event()

        async def handle(fold):
            return [n * 10 for n in fold]

        answers = fold_out(_requests([1], gate), lambda n: 0, handle, 100, 100, size=lambda n: 1)
        first = await asyncio.wait_for(answers.__anext__(), 10)  # answered while the stream is still open
        gate.set()
        return first, [a async for a in answers]

    assert asyncio.run(run()) == (10, [])


def test_grpc_is_not_imported_without_the_port():
    code = ("import sys; from embedding_server.app import create_app; from embedding_server.settings import Settings;"
            "create_app(Settings()); print(sorted(m for m in sys.modules if m == 'grpc' or m.startswith('grpc.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("keep_texts", [False, True])
def test_a_long_streams_call_keeps_counts_not_texts_unless_logged(keep_texts):
    call = Call(keep_texts)
    timelines = [object() for _ in range(1000)]
    for i, timeline in enumerate(timelines):
        call.note("m", [f"text {i}", f"more {i}"], 7, timeline=timeline)
    note = call.embed_log()
    assert (note["inputs"], note["tokens"], note["timeline"]) == (2000, 7000, None)  # many engine requests
    assert len(note["texts"]) == (2000 if keep_texts else 0)
    assert call.timeline is timelines[0] and not hasattr(call, "timelines")
    one = Call()
    one.note("m", ["a"], 1, timeline=timelines[5])
    assert one.embed_log()["timeline"] is timelines[5]
