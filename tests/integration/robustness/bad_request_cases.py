"""The table of malformed and odd requests test_bad_requests.py sends to a live server in every dialect: each
case's body, path, expected status, error text and, for a 200, what the answer must hold."""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from tests.integration.robustness.robustness_support import (
    DIM,
    JSON_HEADERS,
    LEGACY,
    MODEL,
    OLLAMA,
    OPENAI,
    assert_unit_vectors,
    jbytes,
)

MIB = 1024 * 1024
SIMPLE = "/embeddings"  # the small FastAPI services' route ({texts, normalize}; OpenAI's body too)


# ----- the case table ------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    path: str
    data: bytes
    status: int
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON_HEADERS))
    param: Any = "unchecked"          # OpenAI error param (checked when not "unchecked")
    code: Any = "unchecked"           # OpenAI error code
    contains: str | None = None       # substring of the error message
    n: int | None = None              # for 200: number of vectors
    dim: int = DIM
    check: Callable[[httpx.Response], None] | None = None
    openai: bool | None = None        # errors in OpenAI's shape (default: the path is under /v1)

    def param_id(self) -> str:
        return f"{self.path}:{self.id}"


def fields(path: str, **kw) -> bytes:
    """A body with the served model and ``kw`` (``input`` is renamed ``prompt`` for the legacy route)."""
    body = {"model": MODEL, **kw}
    if path == LEGACY and "input" in body:
        body["prompt"] = body.pop("input")
    return jbytes(body)


def raw(text: str) -> bytes:
    """JSON written by hand (escapes such as \\ud800 stay escapes)."""
    return text.replace("MODEL", MODEL).encode("utf-8")


def both(id: str, make: Callable[[str], bytes], ollama: int, openai: int, legacy: int | None = None,
         **kw) -> list[Case]:
    """The same body on /api/embed, /v1/embeddings (and /api/embeddings when ``legacy`` is given)."""
    out = [Case(id, OLLAMA, make(OLLAMA), ollama, **_for(OLLAMA, kw)),
           Case(id, OPENAI, make(OPENAI), openai, **_for(OPENAI, kw))]
    if legacy is not None:
        out.append(Case(id, LEGACY, make(LEGACY), legacy, **_for(LEGACY, kw)))
    return out


def _for(path: str, kw: dict) -> dict:
    out = {k: v for k, v in kw.items() if not k.startswith(("ollama_", "openai_"))}
    prefix = "openai_" if path == OPENAI else "ollama_"
    out.update({k[len(prefix):]: v for k, v in kw.items() if k.startswith(prefix)})
    return out


ODD_TEXTS = {
    "emoji": ["🚀🔥👩‍👩‍👧‍👦", "🏳️‍🌈 flags 🇯🇵🇫🇷", "😀" * 3000],
    "cjk": ["日本語のテキストです。", "中文文本，标点符号。", "한국어 텍스트"],
    "rtl": ["שלום עולם", "مرحبا بالعالم", "\u202eevil override\u202c mixed עברית and English"],
    "zalgo": ["z" + "\u0336\u0337\u0338" * 3000 + "algo"],
    "zero_width": ["\u200b\u200c\u200d\u2060\ufeff" * 2000, "a\u200db"],
    "nul_escaped": ["a\u0000b", "\u0000", "\u0000" * 1000],
    "control_chars": ["".join(chr(c) for c in range(1, 32)), "\x7f\x85\u2028\u2029"],
    "max_codepoints": ["\U0010ffff\U000e0001\uffff\ufffe", "\ue000 private use \U000f0000"],
    "special_tokens": ["[CLS] [SEP] [PAD] [MASK] [UNK]", "<s></s><pad><|endoftext|>"],
    "whitespace_only": [" ", "\n\t\r", "\u3000", "\u00a0\u2003", " " * 100_000],
    "mixed_scripts": ["Ünïcödé Ελληνικά Кириллица देवनागरी ไทย ❤ ∑∫√"],
}


def ollama_empty(r: httpx.Response) -> None:
    body = r.json()
    assert body["model"] == MODEL and body["embeddings"] == [] and body["prompt_eval_count"] == 0


def legacy_empty(r: httpx.Response) -> None:
    assert r.json() == {"embedding": []}


def one_dimension(r: httpx.Response) -> None:
    body = r.json()
    vec = body["embeddings"][0] if "embeddings" in body else body["data"][0]["embedding"]
    assert len(vec) == 1 and abs(abs(vec[0]) - 1.0) < 1e-6


GO_TYPE_ERRORS = [  # (id, field, JSON value, what Ollama answers)
    ("truncate_string", "truncate", '"no"',
     "json: cannot unmarshal string into Go struct field EmbedRequest.truncate of type bool"),
    ("truncate_number", "truncate", "1",
     "json: cannot unmarshal number into Go struct field EmbedRequest.truncate of type bool"),
    ("truncate_object", "truncate", "{}",
     "json: cannot unmarshal object into Go struct field EmbedRequest.truncate of type bool"),
    ("dimensions_string", "dimensions", '"8"',
     "json: cannot unmarshal string into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions_float", "dimensions", "8.0",
     "json: cannot unmarshal number 8.0 into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions_exponent", "dimensions", "1e2",
     "json: cannot unmarshal number 1e2 into Go struct field EmbedRequest.dimensions of type int"),
    ("dimensions_2^63", "dimensions", str(2 ** 63),
     f"json: cannot unmarshal number {2 ** 63} into Go struct field EmbedRequest.dimensions of type int"),
    ("model_number", "model", "5",
     "json: cannot unmarshal number into Go struct field EmbedRequest.model of type string"),
    ("options_array", "options", "[]",
     "json: cannot unmarshal array into Go struct field EmbedRequest.options of type map[string]interface {}"),
    ("options_string", "options", '"x"',
     "json: cannot unmarshal string into Go struct field EmbedRequest.options of type map[string]interface {}"),
    ("keep_alive_bool", "keep_alive", "true", "Unsupported type: 'bool'"),
    ("keep_alive_object", "keep_alive", "{}", "Unsupported type: 'map[string]interface {}'"),
    ("keep_alive_bad_duration", "keep_alive", '"forever"', 'time: invalid duration "forever"'),
    ("keep_alive_no_unit", "keep_alive", '"10"', 'time: missing unit in duration "10"'),
    ("input_object", "input", '{"text": "x"}', "invalid input type"),
]


def base64_vectors(r: httpx.Response) -> None:
    vectors = [np.frombuffer(base64.b64decode(v), dtype="<f4") for v in r.json()["embeddings"]]
    assert_unit_vectors(np.asarray(vectors, dtype=np.float64), 2)


def raw_vectors(r: httpx.Response) -> None:
    """normalize false: the pooled vectors, not unit length."""
    vectors = np.asarray(r.json()["embeddings"])
    assert vectors.shape == (2, DIM) and np.isfinite(vectors).all()
    assert not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-2)


def simple_cases() -> list[Case]:
    """POST /embeddings: {texts, normalize} in FastAPI's detail shape; a body with input is OpenAI's."""
    C = [Case("texts", SIMPLE, jbytes({"texts": ["a", "b"], "normalize": True}), 200, n=2),
         Case("texts_default_model", SIMPLE, jbytes({"texts": ["什么是机器学习？"]}), 200, n=1),
         Case("texts_normalize_false", SIMPLE, jbytes({"texts": ["a", "b"], "normalize": False}), 200,
              check=raw_vectors),
         Case("texts_empty", SIMPLE, jbytes({"texts": []}), 400, contains='"texts" must not be empty'),
         Case("texts_unknown_model", SIMPLE, jbytes({"texts": ["a"], "model": "nope"}), 404),
         Case("texts_too_many", SIMPLE, jbytes({"texts": ["x"] * 10_000}), 400, contains="max_inputs=2048"),
         Case("texts_lone_surrogate", SIMPLE, raw('{"texts": ["a\\ud800b"]}'), 400),
         Case("openai_body", SIMPLE, fields(OPENAI, input=["a", "b"]), 200, n=2),
         Case("openai_body_no_model", SIMPLE, jbytes({"input": "x"}), 400, openai=True, param="model"),
         Case("openai_body_empty_input", SIMPLE, fields(OPENAI, input=[]), 400, openai=True, param="input"),
         Case("openai_body_unknown_model", SIMPLE, fields(OPENAI, model="nope", input="x"), 404, openai=True,
              code="model_not_found")]
    for name, body in [("texts_string", '{"texts": "a"}'), ("texts_numbers", '{"texts": [1, 2]}'),
                       ("texts_nested", '{"texts": [["a"]]}'), ("texts_null", '{"texts": null}'),
                       ("texts_missing", '{"normalize": true}'), ("normalize_string", '{"texts": ["a"], "normalize": '
                                                                                     '"yes"}'),
                       ("normalize_number", '{"texts": ["a"], "normalize": 1}'),
                       ("model_number", '{"texts": ["a"], "model": 5}'), ("array_body", '[{"texts": ["a"]}]'),
                       ("null_body", "null"), ("invalid_json", '{"texts": ['), ("empty_body", "")]:
        C.append(Case(name, SIMPLE, raw(body), 400))
    for name, texts in ODD_TEXTS.items():
        C.append(Case(f"odd_text_{name}", SIMPLE, jbytes({"texts": texts}), 200, n=len(texts)))
    return C


def build_cases() -> list[Case]:
    C: list[Case] = []
    # -- not JSON, or not a JSON object ----------------------------------------------------------
    C += both("invalid_json", lambda p: raw('{"model": "MODEL", "input": '), 400, 400, 400, contains="invalid JSON")
    C += both("trailing_garbage", lambda p: raw('{"model": "MODEL", "input": "x"} trailing'), 400, 400, 400)
    C += both("single_quotes", lambda p: raw("{'model': 'MODEL', 'input': 'x'}"), 400, 400, 400)
    C += both("json_array_body", lambda p: jbytes([{"model": MODEL, "input": "x"}]), 400, 400, 400)
    for name, text in [("int", "42"), ("string", '"just a string"'), ("true", "true"), ("float", "1.5e300")]:
        C += both(f"scalar_body_{name}", lambda p, t=text: raw(t), 400, 400, 400,
                  ollama_contains="json: cannot unmarshal")
    # Go decodes null into a struct as nothing set: /api/embed then uses the default model and has no input.
    C += both("scalar_body_null", lambda p: raw("null"), 200, 400, 400, ollama_check=ollama_empty)
    C += both("empty_body", lambda p: b"", 400, 400, 400, ollama_contains="missing request body")
    C += both("empty_object", lambda p: b"{}", 200, 400, 400, openai_param="model", ollama_check=ollama_empty)
    C += both("deep_nesting", lambda p: raw('{"model": "MODEL", "input": ' + "[" * 100_000 + "]" * 100_000 + "}"),
              400, 400, 400)
    C += both("raw_nul_in_string", lambda p: raw('{"model": "MODEL", "input": "a\x00b", "prompt": "a\x00b"}'),
              400, 400, 400)
    C += both("raw_nul_outside_string", lambda p: raw('{"model": "MODEL",\x00 "input": "x", "prompt": "x"}'),
              400, 400, 400)
    # invalid UTF-8 on the wire: lone continuation bytes, overlong '/', truncated sequence, CESU-8 surrogate
    for name, bad in [("ff_fe", b"\xff\xfe"), ("overlong", b"\xc0\xaf"), ("truncated", b"\xe6\x97"),
                      ("cesu8_surrogate", b"\xed\xa0\x80"), ("latin1", "café".encode("latin-1"))]:
        C += both(f"invalid_utf8_{name}",
                  lambda p, b=bad: b'{"model": "' + MODEL.encode() + b'", "input": "a' + b + b'b", "prompt": "a'
                  + b + b'b"}', 400, 400, 400)
    C.append(Case("utf8_bom_is_tolerated", OPENAI, b"\xef\xbb\xbf" + fields(OPENAI, input="bom"), 200, n=1))
    C.append(Case("duplicate_keys_last_wins", OPENAI, raw('{"model": "nope", "model": "MODEL", "input": "x"}'),
                  200, n=1))

    # -- content types ------------------------------------------------------------------------------
    good = fields(OPENAI, input="hello")
    for ctype in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                  "application/xml", None]:
        headers = {} if ctype is None else {"content-type": ctype}
        C.append(Case(f"openai_content_type_{ctype or 'missing'}", OPENAI, good, 400, headers=headers, param=None))
        # Ollama reads every body as JSON, whatever the declared type (as Ollama does).
        C.append(Case(f"ollama_content_type_{ctype or 'missing'}", OLLAMA, fields(OLLAMA, input="hello"), 200,
                      headers=headers, n=1))
        C.append(Case(f"legacy_content_type_{ctype or 'missing'}", LEGACY, fields(LEGACY, input="hello"), 200,
                      headers=headers, n=1))
        # /embeddings too: requests.post(url, data=json.dumps(body)) sends no content type.
        C.append(Case(f"simple_content_type_{ctype or 'missing'}", SIMPLE, jbytes({"texts": ["hello"]}), 200,
                      headers=headers, n=1))
    C.append(Case("openai_content_type_json_charset", OPENAI, good, 200,
                  headers={"content-type": "application/json; charset=utf-8"}, n=1))
    C.append(Case("ollama_form_encoded_body", OLLAMA, f"model={MODEL}&input=hello".encode(), 400,
                  headers={"content-type": "application/x-www-form-urlencoded"}, contains="invalid JSON"))

    # -- missing / null / wrongly typed fields ----------------------------------------------------------
    # /api/embed without a model: the default model (the single-model services' clients send none)
    C += both("missing_model", lambda p: jbytes({"input": "x", "prompt": "x"}), 200, 400, 400, openai_param="model",
              ollama_n=1, ollama_contains="model is required")
    C += both("null_model", lambda p: jbytes({"model": None, "input": "x", "prompt": "x"}), 200, 400, 400,
              openai_param="model", ollama_n=1, ollama_contains="model is required")
    C += both("empty_model", lambda p: fields(p, model="", input="x"), 200, 404, 400, openai_code="model_not_found",
              ollama_n=1)
    for name, value in [("int", 5), ("list", [MODEL]), ("object", {"name": MODEL}), ("bool", True)]:
        C += both(f"model_is_{name}", lambda p, v=value: fields(p, model=v, input="x"), 400, 400, 400,
                  ollama_contains="json: cannot unmarshal",
                  openai_param="model")
    C += both("unknown_model", lambda p: fields(p, model="no-such-model", input="x"), 404, 404, 404,
              openai_code="model_not_found", openai_param="model")
    C += both("huge_model_name", lambda p: fields(p, model="m" * 100_000, input="x"), 404, 404, 404,
              openai_code="model_not_found")
    # Ollama: no input means "load the model" -> 200 with no vectors (as Ollama answers); OpenAI: 400.
    C.append(Case("missing_input", OLLAMA, jbytes({"model": MODEL}), 200, check=ollama_empty))
    C.append(Case("missing_input", LEGACY, jbytes({"model": MODEL}), 200, check=legacy_empty))
    C.append(Case("missing_input", OPENAI, jbytes({"model": MODEL}), 400, param="input"))
    C.append(Case("null_input", OLLAMA, fields(OLLAMA, input=None), 200, check=ollama_empty))
    C.append(Case("null_input", LEGACY, fields(LEGACY, input=None), 200, check=legacy_empty))
    C.append(Case("null_input", OPENAI, fields(OPENAI, input=None), 400, param="input"))
    C.append(Case("empty_string", OLLAMA, fields(OLLAMA, input=""), 200, check=ollama_empty))
    C.append(Case("empty_string", OPENAI, fields(OPENAI, input=""), 400, param="input"))
    C.append(Case("empty_list", OLLAMA, fields(OLLAMA, input=[]), 200, check=ollama_empty))
    C.append(Case("empty_list", OPENAI, fields(OPENAI, input=[]), 400, param="input"))
    C.append(Case("list_with_empty_string", OPENAI, fields(OPENAI, input=["a", ""]), 400, param="input"))
    for name, value in [("nested_str_list", [["a"]]), ("triple_nested_ints", [[[1]]]), ("mixed_str_int", ["a", 1]),
                        ("mixed_int_str", [1, "a"]), ("mixed_int_list", [1, [2]]), ("str_and_null", ["a", None]),
                        ("float_ids", [1.5]), ("object_input", {"text": "x"}), ("int_scalar", 5),
                        ("bool_scalar", True)]:
        C += both(f"input_{name}", lambda p, v=value: fields(p, input=v), 400, 400, 400, openai_param="input")
    # token ids: Ollama takes text only; OpenAI reads cl100k_base ids (0..100276, with gaps)
    C.append(Case("token_ids", OLLAMA, fields(OLLAMA, input=[1, 2, 3]), 400))
    for name, value in [("above_cl100k", [100277]), ("gap_id", [100256]), ("negative", [-1]), ("2^63", [2 ** 63]),
                        ("2^64+1", [2 ** 64 + 1]), ("10^30", [10 ** 30]), ("nested_out_of_range", [[5, 100300]])]:
        C.append(Case(f"token_id_{name}", OPENAI, fields(OPENAI, input=value), 400, param="input",
                      contains="out of range"))
    C.append(Case("token_ids_empty_array", OPENAI, fields(OPENAI, input=[[1], []]), 400, param="input"))
    # JSON booleans are not token ids (pydantic's lax mode would read true as id 1)
    C.append(Case("token_ids_booleans", OPENAI, raw('{"model": "MODEL", "input": [true, false]}'), 400,
                  param="input"))
    C.append(Case("token_ids_nested_booleans", OPENAI, raw('{"model": "MODEL", "input": [[1, true]]}'), 400,
                  param="input"))
    C.append(Case("token_ids_valid_nested", OPENAI, fields(OPENAI, input=[[1, 2], [3]]), 200, n=2))
    C.append(Case("token_id_last_special", OPENAI, fields(OPENAI, input=[100276]), 200, n=1))

    # -- dimensions ---------------------------------------------------------------------------------------
    for name, value in [("negative", "-1"), ("above_model", "385"), ("huge", "1000000"), ("2^70", str(2 ** 70)),
                        ("fraction", "1.5"), ("string", '"abc"'), ("nan", "NaN"), ("infinity", "1e400"),
                        ("bool", "true"), ("list", "[8]")]:
        C += both(f"dimensions_{name}", lambda p, v=value: raw('{"model": "MODEL", "input": "x", "dimensions": '
                                                               + v + "}"), 400, 400, openai_param="dimensions")
    # 0: OpenAI refuses it; Ollama's dimensions is an int whose zero value means "not set" -> full vector.
    C.append(Case("dimensions_zero", OPENAI, fields(OPENAI, input="x", dimensions=0), 400, param="dimensions"))
    C.append(Case("dimensions_zero_means_unset", OLLAMA, fields(OLLAMA, input="x", dimensions=0), 200, n=1))
    C += both("dimensions_one", lambda p: fields(p, input="x", dimensions=1), 200, 200, check=one_dimension)

    # -- encoding_format (OpenAI only; Ollama ignores unknown keys, as Ollama does) -----------------------
    for name, value in [("int8", '"int8"'), ("uppercase", '"FLOAT"'), ("empty", '""'), ("null", "null"),
                        ("number", "5")]:
        C.append(Case(f"encoding_format_{name}", OPENAI,
                      raw('{"model": "MODEL", "input": "x", "encoding_format": ' + value + "}"), 400,
                      param="encoding_format"))
    # Ollama: this server's addition for the single-model services' clients, "float" or "base64"
    C.append(Case("encoding_format_float", OLLAMA, fields(OLLAMA, input=["x", "y"], encoding_format="float"), 200,
                  n=2))
    C.append(Case("encoding_format_base64", OLLAMA, fields(OLLAMA, input=["x", "y"], encoding_format="base64"),
                  200, check=base64_vectors))
    for name, value in [("int8", '"int8"'), ("uppercase", '"FLOAT"'), ("empty", '""')]:
        C.append(Case(f"encoding_format_{name}", OLLAMA,
                      raw('{"model": "MODEL", "input": "x", "encoding_format": ' + value + "}"), 400,
                      contains='expected "float" or "base64"'))
    C.append(Case("encoding_format_number", OLLAMA, fields(OLLAMA, input="x", encoding_format=5), 400,
                  contains="cannot unmarshal number into Go struct field EmbedRequest.encoding_format"))
    C.append(Case("truncate_not_bool", OLLAMA, fields(OLLAMA, input="x", truncate="nope"), 400,
                  contains="cannot unmarshal string into Go struct field EmbedRequest.truncate of type bool"))
    # wrong JSON types: Ollama's Go decoder answers 400 with its message, nothing is coerced
    for name, field_, value, message in GO_TYPE_ERRORS:
        body = '{"model": "MODEL", "input": "x", "prompt": "x", "' + field_ + '": ' + value + "}"
        C.append(Case(f"go_type_{name}", OLLAMA, raw(body), 400, contains=message))
        if field_ in ("options", "keep_alive", "model"):  # EmbeddingRequest has these too
            C.append(Case(f"go_type_{name}", LEGACY, raw(body), 400,
                          contains=message.replace("EmbedRequest", "EmbeddingRequest")))
    C.append(Case("go_type_prompt_number", LEGACY, raw('{"model": "MODEL", "prompt": 5}'), 400,
                  contains="json: cannot unmarshal number into Go struct field EmbeddingRequest.prompt of type string"))
    C.append(Case("go_type_prompt_list", LEGACY, raw('{"model": "MODEL", "prompt": ["x"]}'), 400,
                  contains="json: cannot unmarshal array into Go struct field EmbeddingRequest.prompt of type string"))
    C.append(Case("ollama_client_fields", OLLAMA, raw('{"model": "MODEL", "input": ["x"], "truncate": null, '
                                                      '"dimensions": null, "keep_alive": 300, "options": '
                                                      '{"num_ctx": null, "temperature": 0.0}}'), 200, n=1))
    C.append(Case("truncate_false_too_long", OLLAMA, fields(OLLAMA, input="word " * 1000, truncate=False), 400,
                  contains="context length"))

    # -- request limits ------------------------------------------------------------------------------------
    C += both("10000_inputs", lambda p: fields(p, input=["x"] * 10_000), 400, 400, openai_param="input",
              openai_code="limit_exceeded", contains="max_inputs=2048")
    C.append(Case("10000_token_arrays", OPENAI, fields(OPENAI, input=[[1]] * 10_000), 400, param="input",
                  code="limit_exceeded", contains="max_inputs=2048"))
    long_texts = [f"{i} " + "alpha beta gamma delta epsilon " * 60 for i in range(1200)]  # 1200 x 256 tokens
    C += both("over_max_request_tokens", lambda p: fields(p, input=long_texts), 400, 400, openai_param="input",
              openai_code="limit_exceeded", contains="max_request_tokens=300000")

    # -- lone surrogates: valid JSON escapes, but not Unicode text -> 400, never 500 ------------------------
    for name, text in [("high", '"a\\ud800b"'), ("low", '"\\udc00"'), ("reversed_pair", '"\\ude80\\ud83d"'),
                       ("in_list", '["fine", "\\udbff"]')]:
        C += both(f"lone_surrogate_{name}",
                  lambda p, t=text: raw('{"model": "MODEL", "input": ' + t + ', "prompt": ' + t + "}"),
                  400, 400, 400 if name != "in_list" else None, openai_param="input")
    C += both("lone_surrogate_in_model_name", lambda p: raw('{"model": "\\ud800", "input": "x", "prompt": "x"}'),
              404, 404, 404, openai_param="model", openai_code="model_not_found")
    C.append(Case("lone_surrogate_in_show", "/api/show", raw('{"model": "\\ud800"}'), 404))
    C += both("escaped_surrogate_pair_is_fine", lambda p: raw('{"model": "MODEL", "input": "\\ud83d\\ude80", '
                                                              '"prompt": "\\ud83d\\ude80"}'), 200, 200, 200, n=1)

    # -- valid but odd text -> 200, unit vectors, one per input --------------------------------------------
    for name, texts in ODD_TEXTS.items():
        C += both(f"odd_text_{name}", lambda p, t=texts: fields(p, input=t), 200, 200, n=len(texts))
        C.append(Case(f"odd_text_{name}", LEGACY, fields(LEGACY, input=texts[0]), 200, n=1))
    return C + simple_cases()


CASES = build_cases()
