"""Settings: defaults, EMBED_* overrides, aliases, lists, and documentation of every field."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from embedding_server.settings import Settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.upper().startswith("EMBED_"):
            monkeypatch.delenv(key)


def test_defaults():
    s = Settings()
    assert s.models_dir == Path("./models")
    assert s.model == "all-minilm-l6-v2"
    assert s.model_aliases == "" and s.aliases == {}
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.pooling == "auto"
    assert s.token_ids == "openai"
    assert s.num_threads is None
    assert (s.max_batch_tokens, s.max_batch_size) == (2048, 32)
    assert (s.max_inputs, s.max_request_tokens) == (2048, 300_000)
    assert s.max_body_bytes == 16 * 1024 * 1024
    assert s.auto_truncate is True  # TEI's default since 1.9
    assert s.max_queued_inputs == 16384
    assert s.api_keys == [] and s.cors_origin_list == []
    assert s.log_level == "info" and s.log_inputs is False


def test_env_overrides(monkeypatch, tmp_path):
    env = {
        "EMBED_MODELS_DIR": str(tmp_path),
        "EMBED_MODEL": "bge-m3",
        "EMBED_HOST": "0.0.0.0",
        "EMBED_PORT": "9000",
        "EMBED_POOLING": "cls",
        "EMBED_TOKEN_IDS": "reject",
        "EMBED_NUM_THREADS": "4",
        "EMBED_MAX_BATCH_TOKENS": "4096",
        "EMBED_MAX_BATCH_SIZE": "8",
        "EMBED_MAX_INPUTS": "16",
        "EMBED_MAX_REQUEST_TOKENS": "1000",
        "EMBED_MAX_BODY_BYTES": "2048",
        "EMBED_MAX_QUEUED_INPUTS": "64",
        "EMBED_LOG_LEVEL": "debug",
        "EMBED_LOG_INPUTS": "true",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings()
    assert s.models_dir == tmp_path
    assert (s.model, s.host, s.port, s.pooling, s.token_ids) == ("bge-m3", "0.0.0.0", 9000, "cls", "reject")
    assert s.num_threads == 4
    assert (s.max_batch_tokens, s.max_batch_size, s.max_inputs) == (4096, 8, 16)
    assert (s.max_request_tokens, s.max_body_bytes, s.max_queued_inputs) == (1000, 2048, 64)
    assert s.log_level == "debug" and s.log_inputs is True


def test_env_names_case_insensitive(monkeypatch):
    monkeypatch.setenv("embed_port", "8123")
    assert Settings().port == 8123


def test_constructor_beats_env(monkeypatch):
    monkeypatch.setenv("EMBED_PORT", "9000")
    assert Settings(port=9100).port == 9100


def test_unrelated_env_ignored(monkeypatch):
    monkeypatch.setenv("EMBED_NOT_A_SETTING", "x")
    monkeypatch.setenv("PORT", "1234")
    assert Settings().port == 8000


@pytest.mark.parametrize(
    "key, value",
    [
        ("EMBED_PORT", "0"),
        ("EMBED_PORT", "70000"),
        ("EMBED_PORT", "eighty"),
        ("EMBED_POOLING", "median"),
        ("EMBED_TOKEN_IDS", "gpt2"),
        ("EMBED_MAX_BATCH_SIZE", "0"),
        ("EMBED_NUM_THREADS", "0"),
        ("EMBED_MAX_BODY_BYTES", "10"),
        ("EMBED_LOG_LEVEL", "verbose"),
    ],
)
def test_invalid_values_rejected(monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError):
        Settings()


def test_alias_parsing(monkeypatch):
    monkeypatch.setenv("EMBED_MODEL_ALIASES", " text-embedding-3-small = bge-m3 ,nomic=nomic-embed-text,, ")
    assert Settings().aliases == {"text-embedding-3-small": "bge-m3", "nomic": "nomic-embed-text"}


@pytest.mark.parametrize("bad", ["lonely", "a=b=c", "=model", "alias=", "a=b,broken", " = "])
def test_bad_alias_rejected(bad):
    with pytest.raises(ValidationError, match="alias=model"):
        Settings(model_aliases=bad)


def test_api_keys_and_cors_lists(monkeypatch):
    monkeypatch.setenv("EMBED_API_KEY", "k1, k2 ,,k3")
    monkeypatch.setenv("EMBED_CORS_ORIGINS", "https://a.example, http://localhost:3000")
    s = Settings()
    assert s.api_keys == ["k1", "k2", "k3"]
    assert s.cors_origin_list == ["https://a.example", "http://localhost:3000"]


def test_single_api_key():
    assert Settings(api_key="secret").api_keys == ["secret"]
    assert Settings(api_key=" , ").api_keys == []


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_field_has_a_description(name):
    description = Settings.model_fields[name].description
    assert description and description.strip()


def test_unknown_embed_variables_are_named():
    from embedding_server.settings import unknown_environment

    env = {"EMBED_API_KEYS": "k", "EMBED_API_KEY": "k", "embed_port": "1", "PATH": "/bin", "EMBED_KEEPALIVE": "1m"}
    assert unknown_environment(env) == ["EMBED_API_KEYS", "EMBED_KEEPALIVE"]


def test_keep_alive_setting_accepts_ollama_durations():
    from embedding_server.settings import Settings

    assert Settings(keep_alive="90s").keep_alive_seconds == 90
    assert Settings(keep_alive="-1").keep_alive_seconds == float("inf")
    assert Settings(keep_alive="0").keep_alive_seconds == 0
    with pytest.raises(ValueError):
        Settings(keep_alive="five minutes")


def test_grpc_port_off_unless_set(monkeypatch):
    assert Settings().grpc_port is None
    monkeypatch.setenv("EMBED_GRPC_PORT", "50051")
    assert Settings().grpc_port == 50051
    monkeypatch.setenv("EMBED_GRPC_PORT", "")  # what `docker run -e EMBED_GRPC_PORT=` sends: off
    assert Settings().grpc_port is None
    monkeypatch.setenv("EMBED_GRPC_PORT", "0")
    with pytest.raises(ValidationError):
        Settings()
