"""The rerank bench: generated cross-encoder folders load as rerankers (checked at a tiny width), and the
targets' verdicts and report follow the measured ratios."""

from __future__ import annotations

import json
import math

import pytest

from bench import cross_encoder_shape, rerank

TINY = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


def test_the_shapes_are_the_real_models():
    minilm, bge = (cross_encoder_shape.SHAPES[s] for s in ("minilm", "bge-reranker"))
    c = minilm["config"]
    assert (minilm["architecture"], minilm["layers"], c["hidden_size"], c["num_attention_heads"],
            c["intermediate_size"], c["vocab_size"], c["max_position_embeddings"], c["type_vocab_size"]) == (
        "BertForSequenceClassification", 6, 384, 12, 1536, 30522, 512, 2)
    c = bge["config"]
    assert (bge["architecture"], bge["layers"], c["hidden_size"], c["num_attention_heads"], c["intermediate_size"],
            c["vocab_size"], c["max_position_embeddings"], c["type_vocab_size"]) == (
        "XLMRobertaForSequenceClassification", 24, 1024, 16, 4096, 250002, 8194, 1)


def test_cache_names(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBED_BENCH_CACHE", str(tmp_path))
    assert cross_encoder_shape.cache_dir("minilm") == tmp_path / "ms-marco-minilm-l-6-v2-shape"
    assert cross_encoder_shape.cache_dir("minilm", 2).name == "ms-marco-minilm-l-6-v2-shape-L2"
    assert cross_encoder_shape.cache_dir("bge-reranker").name == "bge-reranker-v2-m3-shape-L24"
    with pytest.raises(ValueError):
        cross_encoder_shape.cache_dir("nope")


@pytest.mark.parametrize("shape, overrides, context, types", [
    ("minilm", TINY, 512, True),
    ("bge-reranker", {**TINY, "vocab_size": 4096}, 8192, False),
])
def test_a_tiny_generated_folder_loads_as_a_reranker(tmp_path, monkeypatch, shape, overrides, context, types):
    from embedding_server.model.encoder import SentenceEncoder

    monkeypatch.setenv("EMBED_BENCH_CACHE", str(tmp_path / "cache"))  # no cached BGE-M3 tokenizer: trained here

    quiet = lambda *_: None  # noqa: E731
    folder = cross_encoder_shape.build(tmp_path / "ce", shape, layers=2, overrides=overrides, log=quiet)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [cross_encoder_shape.SHAPES[shape]["architecture"]]
    assert config["num_hidden_layers"] == 2 and len(config["id2label"]) == 1  # one label
    assert cross_encoder_shape.is_complete(folder, shape, 2, overrides)
    assert cross_encoder_shape.build(folder, shape, layers=2, overrides=overrides, log=quiet) == folder  # reused
    assert not list(tmp_path.glob(".ce.tmp-*"))
    assert "tokenizer" in json.loads((folder / cross_encoder_shape.MARKER).read_text())
    encoder = SentenceEncoder(folder)
    assert encoder.details.task == "rerank" and encoder.context_length == context
    assert ("token_type_ids" in encoder.tokenizer.model_input_names) == types
    pairs = encoder.tokenize_pairs(rerank.workload.QUERY, rerank.documents(2))
    assert len(pairs) == 2 and all(len(p) > 100 for p in pairs)


def test_documents_and_requests():
    docs = rerank.documents(100, 100)
    sizes = [len(d.split()) for d in docs]
    assert len(docs) == 100 and len(set(docs)) == 100 and rerank.documents(100, 100) == docs  # fixed seed
    assert min(sizes) >= 50 and max(sizes) <= 150 and 90 <= sum(sizes) / 100 <= 110 and len(set(sizes)) > 30
    reqs = rerank.requests(docs, 16, 20)
    assert len(reqs) == 16 and all(len(r) == 20 for r in reqs)
    assert reqs[0] == docs[:20] and reqs[5] == docs[:20]  # cycling through the 100 documents


def _result(single: list[tuple[float, float]], conc: list[tuple[float, float]], diff: float = 1e-7,
            other: float = 0.0) -> dict:
    rounds = [{"single": {"reference_ms": ref, "server_ms": srv, "cpu": {"other": other}},
               "concurrent": {"reference_pairs_per_s": ref_ps, "server_pairs_per_s": srv_ps, "server_p95_ms": 900.0,
                              "cpu": {"other": 0.0}}}
              for (ref, srv), (ref_ps, srv_ps) in zip(single, conc)]
    config = dict(rerank.FULL, quick=False, threads=2)
    machine = {"cpu": "Test CPU", "physical_cores": 2, "logical_cpus": 2, "torch": "2.x", "transformers": "5.x",
               "sentence_transformers": "6.x", "python": "3.11"}
    return {"machine": machine, "model": "/x/ms-marco-minilm-l-6-v2-shape", "config": config, "layers": 6,
            "tokens_per_pair": 126.0, "server_rss_warm_mb": 700.0, "rounds": rounds,
            "check": {"pairs": 100, "max_abs_diff": diff, "sorted_desc": True},
            "cpu": {"server": 1.0, "bench": 0.5, "other": other}}


def test_targets_pass_on_the_median_round():
    r = _result(single=[(1000, 900), (1000, 1200), (1000, 950)], conc=[(100, 140), (100, 120), (100, 135)])
    single, conc, check = rerank.targets(r)
    assert single["measured"] == pytest.approx(1000 / 950) and single["pass"] and not single["noisy"]
    assert conc["measured"] == pytest.approx(1.35) and conc["pass"]
    assert check["pass"] and check["op"] == "<="
    r["targets"] = [single, conc, check]
    text = rerank.markdown(r)
    assert "Test CPU, 2 physical cores" in text and "torch 2.x" in text and "FAIL" not in text
    assert text.count("PASS") == 3 and "rounds 1.111, 0.833, 1.053" in text


def test_targets_fail_below_the_thresholds_and_on_bad_scores():
    r = _result(single=[(1000, 1100)], conc=[(100, 129)], diff=2e-5, other=0.5)
    single, conc, check = rerank.targets(r)
    assert not single["pass"] and single["noisy"] and not conc["pass"] and not check["pass"]
    r["targets"] = [single, conc, check]
    text = rerank.markdown(r)
    assert text.count("FAIL") == 3 and "(noisy)" in text and "WARNING" in text
    nan = rerank.targets(_result(single=[(1000, math.nan)], conc=[(100, 200)]))
    assert not nan[0]["pass"] and nan[1]["pass"]


def test_the_rerank_flag_runs_only_the_rerank_scenario(monkeypatch, tmp_path):
    from bench import run

    args = run.parse_args(["--rerank", "--quick"])
    assert args.rerank and args.model_dir is None and args.out is None  # the main bench's defaults stay unset
    assert run.parse_args(["--rerank", "--bge-m3-shape", "--layers", "2"]).layers == 2
    called = []
    monkeypatch.setattr(rerank, "main", lambda a: called.append(a) or 0)
    assert run.main(["--rerank", "--out", str(tmp_path)]) == 0 and called[0].out == tmp_path
    skipped = run.parse_args(["--rerank", "--long-context", "--model-dir", str(tmp_path)])
    monkeypatch.undo()
    assert rerank.main(skipped) == 0 and not list(tmp_path.iterdir())  # skipped: nothing built or written
