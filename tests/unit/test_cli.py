"""The CLI: flags layered over EMBED_* settings, and the start-up check of the default model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.checkpoints import minimal_safetensors
from embedding_server import cli
from embedding_server.engine import registry as reg


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.upper().startswith("EMBED_"):
            monkeypatch.delenv(key)


@pytest.fixture
def no_embedded(monkeypatch):
    monkeypatch.setattr(reg, "embedded_model_path", lambda: None)


def parse(*argv: str):
    return cli.settings_from_args(cli._parser().parse_args(["serve", *argv]))


def fake_model(path: Path, files=("config.json", "model.safetensors", "tokenizer.json")) -> Path:
    path.mkdir(parents=True)
    for name in files:
        if name.endswith(".safetensors"):
            (path / name).write_bytes(minimal_safetensors())
        else:
            (path / name).write_text("{}")
    return path


def test_flags_override_env(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBED_PORT", "9000")
    monkeypatch.setenv("EMBED_MODEL", "from-env")
    monkeypatch.setenv("EMBED_HOST", "0.0.0.0")
    monkeypatch.setenv("EMBED_MODELS_DIR", "/env/models")
    s = parse("--port", "9001", "--model", "from-flag", "--models-dir", str(tmp_path))
    assert s.port == 9001
    assert s.model == "from-flag"
    assert s.models_dir == tmp_path
    assert s.host == "0.0.0.0"  # no flag given: the environment's value stays


def test_no_flags_uses_env(monkeypatch):
    monkeypatch.setenv("EMBED_PORT", "9002")
    monkeypatch.setenv("EMBED_MAX_BATCH_SIZE", "4")
    s = parse()
    assert s.port == 9002 and s.max_batch_size == 4 and s.model == "all-minilm-l6-v2"


def test_bad_flag_value_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli._parser().parse_args(["serve", "--port", "abc"])
    assert info.value.code == 2


def test_command_required():
    with pytest.raises(SystemExit):
        cli._parser().parse_args([])


def test_check_missing_default_model(tmp_path, no_embedded):
    fake_model(tmp_path / "other")
    message = cli.check_default_model(parse("--models-dir", str(tmp_path), "--model", "nope"))
    assert message and "\n" not in message
    assert "'nope' not found" in message
    assert str(tmp_path) in message
    assert "other" in message  # lists what was found
    assert "download-model.sh nope" in message


def test_check_missing_default_model_empty_dir(tmp_path, no_embedded):
    message = cli.check_default_model(parse("--models-dir", str(tmp_path / "none"), "--model", "nope"))
    assert message and "models found: none" in message and "\n" not in message


def test_check_broken_default_model(tmp_path, no_embedded):
    folder = fake_model(tmp_path / "half", files=("config.json", "tokenizer.json"))
    message = cli.check_default_model(parse("--models-dir", str(tmp_path), "--model", "half"))
    assert message and "\n" not in message
    assert str(folder) in message and "missing weights" in message


def test_check_good_default_model(tmp_path, no_embedded):
    fake_model(tmp_path / "good")
    assert cli.check_default_model(parse("--models-dir", str(tmp_path), "--model", "good")) is None
    assert cli.check_default_model(parse("--models-dir", str(tmp_path), "--model", "good:latest")) is None


def test_check_default_model_through_alias(monkeypatch, tmp_path, no_embedded):
    fake_model(tmp_path / "good")
    monkeypatch.setenv("EMBED_MODEL_ALIASES", "default=good")
    assert cli.check_default_model(parse("--models-dir", str(tmp_path), "--model", "default")) is None


def test_check_embedded_fallback(tmp_path):
    assert cli.check_default_model(parse("--models-dir", str(tmp_path), "--model", "all-minilm-l6-v2")) is None


def test_main_invalid_settings_one_line(monkeypatch, capsys):
    monkeypatch.setenv("EMBED_POOLING", "median")
    assert cli.main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("embedding-server: invalid settings:")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_main_missing_model_exits_before_serving(monkeypatch, tmp_path, capsys, no_embedded):
    import logging

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not serve"))
    monkeypatch.setattr(logging, "basicConfig", lambda **kw: None)  # keep the root logger as pytest set it
    assert cli.main(["serve", "--models-dir", str(tmp_path), "--model", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("embedding-server: cannot start:") and "'nope' not found" in err
    assert err.count("\n") == 1
