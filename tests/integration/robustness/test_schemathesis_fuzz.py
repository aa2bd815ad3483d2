"""Property-based fuzzing of every operation in the live server's own OpenAPI spec (schemathesis).

Bounded: FUZZ_EXAMPLES cases per operation and generation mode (positive: valid per the spec; negative:
invalid per the spec), derandomized so a run is repeatable (ROBUSTNESS_FUZZ_RANDOM=1 explores afresh).
Loopback only. Asserted for every case: no 5xx, JSON in the calling dialect's error shape for every error,
the declared content types and response schemas, invalid data rejected with 4xx, and, where the spec
declares its error statuses, that no undeclared status is returned.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
# Imported here, not lazily by schemathesis deep inside hypothesis' recursion: CPython 3.11.7 compiling a module's
# source there can fail with "SystemError: AST constructor recursion depth mismatch" (seen once in a fresh clone).
from schemathesis.generation import body_overrides  # noqa: F401
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from embedding_server.api.errors import TEI_STATUSES, dialect_of
from tests.integration.robustness.robustness_support import (
    MODEL,
    assert_serving,
    server_errors,
)

pytestmark = pytest.mark.slow  # a live server process fuzzed for a minute or more: left out of make test-fast

FUZZ_EXAMPLES = int(os.environ.get("ROBUSTNESS_FUZZ_EXAMPLES", "50"))
RANDOM = os.environ.get("ROBUSTNESS_FUZZ_RANDOM") == "1"


def dialect_error_shape(response, case) -> None:
    """Every answer of our JSON routes is JSON; errors are in the shape of the route's dialect."""
    status = response.status_code
    ctype = response.headers.get("content-type", "")
    if isinstance(ctype, list):
        ctype = ctype[0]
    assert ctype.startswith("application/json"), f"{status} with content type {ctype!r}"
    body = response.json()
    if status < 400:
        return
    dialect = dialect_of(case.operation.path, case.operation.method.upper())
    body_in = case.body if isinstance(case.body, dict) else {}
    if case.operation.path == "/rerank" and "documents" in body_in and "texts" not in body_in:
        dialect = "openai"  # Cohere's body on TEI's /rerank is answered as /v1/rerank
    if dialect == "tei":  # 422 for invalid bodies, as TEI
        assert isinstance(body, dict) and set(body) == {"error", "error_type"}, body
        assert isinstance(body["error"], str) and body["error"] and body["error_type"] in TEI_STATUSES, body
        return
    if case.operation.path == "/embeddings" and isinstance(body, dict) and set(body) == {"detail"}:
        assert isinstance(body["detail"], str) and body["detail"], body  # FastAPI's shape, its texts body
    elif dialect == "openai" or case.operation.path == "/embeddings":  # OpenAI's body
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body
        assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    else:
        assert isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str), body
    assert status != 422, "validation errors are 400 in both dialects, never FastAPI's 422"


def declares_error_statuses(operation) -> bool:
    """True when the spec lists the operation's real error statuses (anything but 2xx and FastAPI's
    automatic 422, which this server never sends)."""
    codes = {str(c).upper() for c in operation.responses.status_codes}
    return any(not c.startswith("2") and c != "422" for c in codes)


def steer_to_the_model(case, counter: int) -> None:
    """Half of the valid cases name the served model (and a dimension it has), so the fuzz reaches the
    tokenizer and the forward pass instead of stopping at 'model not found' (the spec cannot say which
    names and dimensions exist)."""
    body = case.body
    if isinstance(body, dict) and counter % 2 == 0:
        for key in ("model", "name"):
            if key in body:
                body[key] = MODEL
        if not (isinstance(body.get("dimensions"), int) and 1 <= body["dimensions"] <= 384):
            body.pop("dimensions", None)


class Tally:
    """What the fuzz run saw: cases per (operation, mode), statuses per operation, failure messages."""

    def __init__(self):
        self.cases: Counter = Counter()
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.failures: dict[str, list[str]] = defaultdict(list)


def fuzz_operation(operation, label: str, mode: GenerationMode, checks: list, base: str,
                   session: requests.Session, tally: Tally) -> None:
    """FUZZ_EXAMPLES generated cases of one operation in one mode; failures are collected, not raised."""
    try:
        strategy = operation.as_strategy(generation_mode=mode)
    except Exception as exc:  # noqa: BLE001 - e.g. nothing can be made invalid
        if mode == GenerationMode.POSITIVE:
            tally.failures[f"{label} strategy"].append(repr(exc))
        return

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=strategy)
    def run(case):
        n = tally.cases[(label, mode.value)]
        tally.cases[(label, mode.value)] += 1
        if mode == GenerationMode.POSITIVE:
            steer_to_the_model(case, n)
        try:
            response = case.call(base_url=base, session=session, timeout=120)
        except requests.RequestException as exc:
            tally.failures[label].append(f"{mode.value}: transport error {exc!r} for {case.body!r:.200}")
            return
        tally.statuses[label][response.status_code] += 1
        try:
            case.validate_response(response, checks=checks)
        except AssertionError as exc:
            tally.failures[label].append(f"{mode.value}: {str(exc).strip()[:600]}")
        try:
            dialect_error_shape(response, case)
        except (AssertionError, ValueError) as exc:
            tally.failures[label].append(f"{mode.value}: dialect shape: {exc} for {case.body!r:.200}")

    try:
        run()
    except Unsatisfiable:  # nothing in this operation can be made invalid (a GET without parameters)
        if mode == GenerationMode.POSITIVE:
            tally.failures[label].append("positive: no case could be generated")


def test_fuzz_openapi_operations(server):
    schema = schemathesis.openapi.from_url(server.base + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the spec lists no operations"
    session = requests.Session()
    session.trust_env = False  # no proxies: loopback only
    tally = Tally()
    unchecked_status: list[str] = []
    started = time.monotonic()
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        checks = [not_a_server_error, content_type_conformance, response_headers_conformance,
                  response_schema_conformance]
        if declares_error_statuses(operation):
            checks.append(status_code_conformance)
        else:
            unchecked_status.append(label)
        fuzz_operation(operation, label, GenerationMode.POSITIVE, checks, server.base, session, tally)
        fuzz_operation(operation, label, GenerationMode.NEGATIVE, [*checks, negative_data_rejection], server.base,
                       session, tally)

    seconds = time.monotonic() - started
    cases, statuses, failures = tally.cases, tally.statuses, tally.failures
    total = sum(cases.values())
    print(f"\n[fuzz] {total} cases over {len(operations)} operations in {seconds:.1f}s "
          f"({FUZZ_EXAMPLES} max per operation and mode, {'random' if RANDOM else 'derandomized'})")
    for label in sorted(statuses):
        print(f"  {label:32s} {sum(v for (op, _), v in cases.items() if op == label):4d} cases  "
              f"statuses {dict(sorted(statuses[label].items()))}")
    if unchecked_status:
        print(f"  status_code_conformance skipped (the spec declares no error statuses): {', '.join(unchecked_status)}")
    print(f"  server-side 5xx: {server_errors(server.base) or 'none'}")
    distinct = {label: sorted(set(msgs)) for label, msgs in failures.items()}
    for label, msgs in distinct.items():
        print(f"  FAIL {label}: {len(failures[label])} cases, {len(msgs)} distinct")
        for msg in msgs[:5]:
            print("     - " + msg.replace("\n", "\n       "))
    assert total >= len(operations), "no cases were generated"
    assert not distinct, f"{sum(len(v) for v in failures.values())} failing cases: {list(distinct)}"
    assert server_errors(server.base) == {}
    assert_serving(server)
