"""go_json: Ollama's bodies read with Go's encoding/json type rules, messages as Go writes them."""

from __future__ import annotations

import json

import pytest

from embedding_server.api.errors import ApiError
from embedding_server.api.go_json import decode
from embedding_server.api.ollama import EMBED_REQUEST, EMBEDDING_REQUEST
from embedding_server.durations import duration_error


def run(text: str, struct=EMBED_REQUEST) -> dict:
    raw = text.encode()
    return decode(json.loads(raw) if raw else None, struct, raw)


def refused(text: str, struct=EMBED_REQUEST) -> str:
    with pytest.raises(ApiError) as info:
        run(text, struct)
    assert info.value.status == 400
    return info.value.message


def test_fields_set_null_and_unknown_keys_left_out():
    got = run('{"model": "m", "input": ["a"], "truncate": false, "dimensions": 8, "options": {"num_ctx": null}, '
              '"keep_alive": "5m", "made_up": [1], "dimensions_x": "y", "prompt": 5}')
    assert got == {"model": "m", "input": ["a"], "truncate": False, "dimensions": 8, "options": {"num_ctx": None},
                   "keep_alive": "5m"}
    assert run('{"model": null, "input": null, "truncate": null, "dimensions": null, "options": null, '
               '"keep_alive": null}') == {}
    assert run("null") == {}  # null into a struct sets nothing


def test_keys_match_case_insensitively_exact_first():
    assert run('{"MODEL": "m", "Input": "x", "Truncate": true}') == {"model": "m", "input": "x", "truncate": True}
    assert run('{"option\u017f": {}, "\u212aeep_alive": 5}') == {"options": {}, "keep_alive": 5}  # ſ: s, K: k
    assert refused('{"TRUNCATE": "no"}') == \
        "json: cannot unmarshal string into Go struct field EmbedRequest.truncate of type bool"


@pytest.mark.parametrize("field, value, message", [
    ("truncate", '"no"', "cannot unmarshal string into Go struct field EmbedRequest.truncate of type bool"),
    ("truncate", "1", "cannot unmarshal number into Go struct field EmbedRequest.truncate of type bool"),
    ("truncate", "[true]", "cannot unmarshal array into Go struct field EmbedRequest.truncate of type bool"),
    ("dimensions", '"8"', "cannot unmarshal string into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions", "1.50", "cannot unmarshal number 1.50 into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions", "8.0", "cannot unmarshal number 8.0 into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions", "1e2", "cannot unmarshal number 1e2 into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions", "1e400", "cannot unmarshal number 1e400 into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions", str(2 ** 63), f"cannot unmarshal number {2 ** 63} into Go struct field EmbedRequest.dimensions "
                                 "of type int"),
    ("dimensions", "true", "cannot unmarshal bool into Go struct field EmbedRequest.dimensions of type int"),
    ("model", "5", "cannot unmarshal number into Go struct field EmbedRequest.model of type string"),
    ("model", '{"name": "m"}', "cannot unmarshal object into Go struct field EmbedRequest.model of type string"),
    ("options", "[]", "cannot unmarshal array into Go struct field EmbedRequest.options of type "
                      "map[string]interface {}"),
    ("options", '"x"', "cannot unmarshal string into Go struct field EmbedRequest.options of type "
                       "map[string]interface {}"),
])
def test_wrong_types_are_gos_messages(field, value, message):
    assert refused(f'{{"model": "m", "{field}": {value}}}') == "json: " + message


def test_int_range_and_input_of_any_type():
    assert run(f'{{"dimensions": {2 ** 63 - 1}}}') == {"dimensions": 2 ** 63 - 1}
    assert run(f'{{"dimensions": {-2 ** 63}}}') == {"dimensions": -2 ** 63}
    for value in ('{"a": 1}', "5", "true", "[1, [2]]"):  # Input is `any`: the handler says "invalid input type"
        assert "input" in run(f'{{"input": {value}}}')


def test_first_type_error_in_the_document_wins_but_keep_alive_stops_at_once():
    assert refused('{"dimensions": "8", "truncate": "no"}').endswith("EmbedRequest.dimensions of type int")
    assert refused('{"truncate": "no", "dimensions": "8"}').endswith("EmbedRequest.truncate of type bool")
    assert refused('{"truncate": "no", "keep_alive": true}') == "Unsupported type: 'bool'"


@pytest.mark.parametrize("value, message", [
    ("true", "Unsupported type: 'bool'"),
    ("[1]", "Unsupported type: '[]interface {}'"),
    ('{"m": 5}', "Unsupported type: 'map[string]interface {}'"),
    ("1e400", "json: cannot unmarshal number 1e400 into Go value of type float64"),
    ('"forever"', 'time: invalid duration "forever"'),
    ('"10"', 'time: missing unit in duration "10"'),
    ('"5 minutes"', 'time: unknown unit " minutes" in duration "5 minutes"'),
])
def test_keep_alive_errors(value, message):
    assert refused(f'{{"keep_alive": {value}}}') == message


@pytest.mark.parametrize("value", ["300", "-1", "1.5", '"5m"', '"1h30m"', '"-1s"', '"0"', '"1.5h"', '".5s"',
                                   '"300ms"', '"2µs"', '"2μs"', '"9223372036854775807ns"'])
def test_keep_alive_values_ollama_reads(value):
    assert "keep_alive" in run(f'{{"keep_alive": {value}}}')


@pytest.mark.parametrize("text, message", [
    ("", 'time: invalid duration ""'),
    ("-", 'time: invalid duration "-"'),
    (".", 'time: invalid duration "."'),
    ("5", 'time: missing unit in duration "5"'),
    ("5M", 'time: unknown unit "M" in duration "5M"'),
    ("1h1", 'time: missing unit in duration "1h1"'),
    ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
    ("2562048h", 'time: invalid duration "2562048h"'),
    ("5\u00e9", 'time: unknown unit "\\xc3\\xa9" in duration "5\\xc3\\xa9"'),
    ('5"', 'time: unknown unit "\\"" in duration "5\\""'),
])
def test_parse_duration_errors(text, message):
    assert duration_error(text) == message


def test_parse_duration_accepts_go_forms():
    for text in ("0", "+0", "-0", "1ns", "1us", "1.5h", "1h2m3s4ms5us6ns", ".5m", "5.m", "-9223372036854775808ns",
                 "2562047h"):
        assert duration_error(text) is None, text


def test_bodies_that_are_not_objects():
    assert refused("") == "missing request body"
    assert refused("[1, 2]") == "json: cannot unmarshal array into Go value of type api.EmbedRequest"
    assert refused("42") == "json: cannot unmarshal number into Go value of type api.EmbedRequest"
    assert refused('"x"', EMBEDDING_REQUEST) == "json: cannot unmarshal string into Go value of type " \
                                                "api.EmbeddingRequest"
    assert refused('{"prompt": ["x"]}', EMBEDDING_REQUEST) == \
        "json: cannot unmarshal array into Go struct field EmbeddingRequest.prompt of type string"
