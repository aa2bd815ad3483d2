"""inspect_checkpoint on model folders built in tmp_path from a tiny BERT checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from embedding_server.model.checkpoint import CheckpointError, inspect_checkpoint

ST_FILES = ("1_Pooling", "modules.json", "sentence_bert_config.json")
FLAGS = ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "lasttoken", "weightedmean_tokens")


@pytest.fixture
def folder(tiny_models_dir, tmp_path) -> Path:
    """A private copy of the tiny BERT checkpoint (mean pooling, max_seq_length 32)."""
    return Path(shutil.copytree(tiny_models_dir / "tiny-bert", tmp_path / "my-model"))


def _strip_st_files(path: Path) -> None:
    for name in ST_FILES:
        target = path / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()


def _pooling_config(flag: str) -> dict:
    cfg = {"word_embedding_dimension": 32}
    cfg.update({f"pooling_mode_{f}": f == flag for f in FLAGS})
    return cfg


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        inspect_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message, "the message must be one line"
    assert str(path) in message, "the message must name the folder"
    return message


def test_tiny_bert_reads_its_st_files(folder):
    info = inspect_checkpoint(folder)
    assert info.path == folder
    assert info.pooling == "mean"
    assert info.max_seq_length == 32
    assert info.do_lower_case is False
    assert info.architecture == "bert"


def test_xlmr_architecture_and_cls(tiny_models_dir):
    info = inspect_checkpoint(tiny_models_dir / "tiny-xlmr")
    assert info.architecture == "xlm-roberta"
    assert info.pooling == "cls"
    assert info.max_seq_length == 48


def test_accepts_str_path(folder):
    assert inspect_checkpoint(str(folder)).path == folder


def test_not_a_directory(tmp_path):
    missing = tmp_path / "nope"
    assert "not a directory" in _error(missing)
    file = tmp_path / "file"
    file.write_text("x")
    assert "not a directory" in _error(file)


def test_missing_config(folder):
    (folder / "config.json").unlink()
    assert "missing config.json" in _error(folder)


def test_unreadable_config(folder):
    (folder / "config.json").write_text("{not json")
    message = _error(folder)
    assert "config.json" in message


def test_missing_weights(folder):
    (folder / "model.safetensors").unlink()
    message = _error(folder)
    assert "missing weights" in message
    assert "model.safetensors" in message


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json"])
def test_other_weight_files_accepted(folder, name):
    (folder / "model.safetensors").rename(folder / name)
    assert inspect_checkpoint(folder).pooling == "mean"


def test_missing_tokenizer(folder):
    (folder / "tokenizer.json").unlink()
    message = _error(folder)
    assert "missing tokenizer" in message
    assert "tokenizer.json" in message


@pytest.mark.parametrize("name", ["vocab.txt", "sentencepiece.bpe.model", "spiece.model", "vocab.json"])
def test_other_tokenizer_files_accepted(folder, name):
    (folder / "tokenizer.json").rename(folder / name)
    assert inspect_checkpoint(folder).architecture == "bert"


def test_checks_in_order_config_first(folder):
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).unlink()
    assert "config.json" in _error(folder)


@pytest.mark.parametrize(
    "flag, mode",
    [("cls_token", "cls"), ("mean_tokens", "mean"), ("max_tokens", "max"), ("lasttoken", "lasttoken"),
     ("mean_sqrt_len_tokens", "mean_sqrt_len"), ("weightedmean_tokens", "weightedmean")],
)
def test_pooling_flags(folder, flag, mode):
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(_pooling_config(flag)))
    assert inspect_checkpoint(folder).pooling == mode


@pytest.mark.parametrize(
    "value, mode",
    [("cls", "cls"), ("cls_token", "cls"), ("mean", "mean"), ("mean_tokens", "mean"), ("max", "max"),
     ("lasttoken", "lasttoken"), ("mean_sqrt_len_tokens", "mean_sqrt_len"), ("weightedmean", "weightedmean")],
)
def test_pooling_mode_string(folder, value, mode):
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": value}))
    assert inspect_checkpoint(folder).pooling == mode


def test_unsupported_pooling_mode(folder):
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "attention"}))
    message = _error(folder)
    assert "'attention'" in message
    assert "1_Pooling/config.json" in message


def test_concatenated_pooling_flags_are_refused(folder):
    config = {**_pooling_config("mean_tokens"), "pooling_mode_max_tokens": True}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(config))
    assert "concatenates several modes (max, mean)" in _error(folder)


def test_custom_model_code_is_refused(folder):
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "modeling_custom.CustomModel"}
    (folder / "config.json").write_text(json.dumps(config))
    assert "trust_remote_code" in _error(folder)


def test_no_pooling_flag_set(folder):
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(_pooling_config("none")))
    assert inspect_checkpoint(folder).pooling is None


def test_pooling_without_modules_json_uses_1_pooling(folder):
    (folder / "modules.json").unlink()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(_pooling_config("max_tokens")))
    assert inspect_checkpoint(folder).pooling == "max"


def test_modules_json_points_at_other_pooling_folder(folder):
    # 1_Pooling still says mean; modules.json names another folder, which must win.
    (folder / "2_Pool").mkdir()
    (folder / "2_Pool" / "config.json").write_text(json.dumps(_pooling_config("cls_token")))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Pool", "type": "sentence_transformers.models.Pooling"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    assert inspect_checkpoint(folder).pooling == "cls"


def test_modules_json_pooling_folder_renamed_away(folder):
    (folder / "1_Pooling").rename(folder / "pooler")
    modules = json.loads((folder / "modules.json").read_text())
    for module in modules:
        if module["type"].endswith("Pooling"):
            module["path"] = "pooler"
    (folder / "modules.json").write_text(json.dumps(modules))
    assert inspect_checkpoint(folder).pooling == "mean"


def test_sentence_bert_config(folder):
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 77, "do_lower_case": True}))
    info = inspect_checkpoint(folder)
    assert info.max_seq_length == 77
    assert info.do_lower_case is True


def test_sentence_bert_config_without_length(folder):
    (folder / "sentence_bert_config.json").write_text(json.dumps({"do_lower_case": False}))
    info = inspect_checkpoint(folder)
    assert info.max_seq_length is None
    assert info.do_lower_case is False


def test_folder_without_st_files(folder):
    _strip_st_files(folder)
    info = inspect_checkpoint(folder)
    assert info.pooling is None
    assert info.max_seq_length is None
    assert info.do_lower_case is False
    assert info.architecture == "bert"


def test_model_type_missing_is_unknown(folder):
    config = json.loads((folder / "config.json").read_text())
    del config["model_type"]
    (folder / "config.json").write_text(json.dumps(config))
    assert inspect_checkpoint(folder).architecture == "unknown"


def test_corrupt_safetensors_is_one_clear_line(tmp_path):
    from tests.support.checkpoints import make_tiny_bert

    folder = make_tiny_bert(tmp_path / "broken")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    for garbled in (data[: len(data) // 2], b"\x00" * 64, b"not a safetensors file at all"):
        weights.write_bytes(garbled)
        with pytest.raises(CheckpointError) as info:
            inspect_checkpoint(folder)
        message = str(info.value)
        assert "\n" not in message and str(folder) in message and "corrupt weights file model.safetensors" in message
    weights.write_bytes(data)
    assert inspect_checkpoint(folder).architecture == "bert"
