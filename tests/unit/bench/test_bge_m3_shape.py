"""The BGE-M3-shape generator writes a folder both loaders read as BGE-M3 (checked at a tiny width)."""

from __future__ import annotations

import json

from bench import bge_m3_shape


def test_the_shape_is_bge_m3s():
    config = bge_m3_shape.CONFIG
    assert (config["vocab_size"], config["hidden_size"], config["num_attention_heads"], config["intermediate_size"],
            config["max_position_embeddings"], config["pad_token_id"]) == (250002, 1024, 16, 4096, 8194, 1)
    assert bge_m3_shape.MAX_SEQ_LENGTH == 8192


def test_a_generated_folder_loads_as_a_cls_pooled_8192_token_xlmr(tmp_path, monkeypatch):
    monkeypatch.setattr(bge_m3_shape, "CONFIG", {**bge_m3_shape.CONFIG, "vocab_size": 4096, "hidden_size": 32,
                                                 "num_attention_heads": 2, "intermediate_size": 64})
    folder = bge_m3_shape.build(tmp_path / "shape", layers=1, log=lambda *_: None)
    marker = json.loads((folder / bge_m3_shape.MARKER).read_text())
    assert marker["spec"]["layers"] == 1 and bge_m3_shape.is_complete(folder, 1)
    assert not list(tmp_path.glob(".shape.tmp-*"))  # written under a temporary name, then moved
    assert bge_m3_shape.build(folder, layers=1, log=lambda *_: None) == folder  # reused, not rebuilt
    facts = bge_m3_shape.check(folder)
    assert facts["pooling"] == "cls" and facts["context_length"] == facts["st_max_seq_length"] == 8192
    assert facts["unk_tokens"] == 0 and facts["cosine_st_vs_server_encoder"] > 0.99999
    (folder / bge_m3_shape.MARKER).unlink()  # an incomplete folder is rebuilt
    assert not bge_m3_shape.is_complete(folder, 1)
