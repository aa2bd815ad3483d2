"""bfloat16 weights: one copy, layer norms and the residual stream in float32, float32 vectors close to float32's,
on the padding-free forward (whole and sliced, short-batch copies too) and the transformers forward. These run on
any CPU (without native bf16, slowly)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from embedding_server.model.cpu import CpuFeatures, cpu_features, read_flags
from embedding_server.model.dense import Dense, blocked_kernels_available
from embedding_server.model.encoder import SentenceEncoder
from embedding_server.model.heads import COLBERT, DENSE, SPARSE
from embedding_server.model.file_weights import FileBackedEmbedding
from embedding_server.model.pages import _file_mappings
from embedding_server.model.precision import Float32LayerNorm, resolve_dtype
from tests.unit.model.test_m3_heads import FOLDER as M3_FOLDER
from tests.unit.model.test_m3_heads import REFERENCE as M3_REFERENCE

TEXTS = ["the quick brown fox jumps over the lazy dog", "vector search engines rank documents by cosine similarity",
         "air gapped networks have no internet access at all " * 6, "a"]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("name", ["tiny-bert", "tiny-xlmr"])
@pytest.mark.parametrize("padding_free", [True, False])
def test_bf16_vectors_are_float32_and_close_to_float32s(tiny_models_dir, name, padding_free):
    bf16 = SentenceEncoder(tiny_models_dir / name, dtype="bfloat16", padding_free=padding_free)
    fp32 = SentenceEncoder(tiny_models_dir / name, padding_free=padding_free)
    assert bf16.padding_free == padding_free and bf16.details.dtype == "bfloat16" and fp32.details.dtype == "float32"
    got, want = bf16.embed(bf16.tokenize(TEXTS)), fp32.embed(fp32.tokenize(TEXTS))
    assert got.dtype == np.float32 and np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cosines(got, want).min() >= 0.999


def test_one_copy_of_the_weights_in_bf16_with_float32_layer_norms(tiny_models_dir):
    bf16 = SentenceEncoder(tiny_models_dir / "tiny-xlmr", dtype="bfloat16")
    norms = [m for m in bf16.model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(type(m) is Float32LayerNorm and m.weight.dtype == torch.float32 for m in norms)
    others = [p for n, p in bf16.model.named_parameters() if "LayerNorm" not in n]
    assert others and all(p.dtype == torch.bfloat16 for p in others)
    for layer in bf16._packed.layers:  # the fused query/key/value matrix replaced the three, in bf16
        assert all(d.weight.dtype == torch.bfloat16 for d in layer.dense)
    fp32_bytes = sum(p.numel() * 4 for p in others)
    assert sum(p.numel() * p.element_size() for p in others) == fp32_bytes // 2


def test_bf16_word_embeddings_stay_in_the_checkpoint_files_mapping(tiny_models_dir):
    """The lookup table is read from the file (only rows read become resident), not converted to bf16."""
    bf16 = SentenceEncoder(tiny_models_dir / "tiny-xlmr", dtype="bfloat16")
    table = bf16.model.embeddings.word_embeddings
    assert isinstance(table, FileBackedEmbedding) and table.weight.dtype == torch.float32
    start = table.weight.data_ptr()
    assert any(low <= start and start + table.weight.nbytes <= high for low, high in _file_mappings())
    assert bf16.model.get_input_embeddings() is table and bf16.details.dtype == "bfloat16"
    assert not any("word_embeddings" in n for n, _ in bf16.model.named_parameters())
    fp32 = SentenceEncoder(tiny_models_dir / "tiny-xlmr")
    assert torch.equal(table.weight, fp32.model.embeddings.word_embeddings.weight)  # the file's own values


def test_sliced_bf16_forward_equals_the_whole_one(tiny_models_dir):
    bf16 = SentenceEncoder(tiny_models_dir / "tiny-xlmr", dtype="bfloat16")
    bf16.warm_up()
    batch = bf16.tokenize(TEXTS * 6)
    whole = bf16.embed(batch)
    job = bf16.start(batch, unit_ms=1e-6)
    while not job.run(0.0):
        pass
    assert job.slices > 4
    assert _cosines(job.result[DENSE], whole).min() >= 0.99999


@pytest.mark.skipif(not blocked_kernels_available(), reason="this torch build has no oneDNN prepacked-linear ops")
def test_bf16_short_batch_copies_where_the_cpu_can_make_them_and_the_same_vectors_everywhere(tiny_models_dir, cpu,
                                                                                              caplog):
    """With avx512bw/vl/dq (or avx_ne_convert) bf16 blocked copies are made and checked like float32 ones; without,
    none are made, the load says so once, and the default product gives the same vectors."""
    with caplog.at_level(logging.INFO, logger="embedding_server.model.packed"):
        bf16 = SentenceEncoder(tiny_models_dir / "tiny-bert", dtype="bfloat16", short_batch_copy_mb=64, cpu=cpu)
    assert bf16._packed.short_batch_copy == cpu.bf16_blocked_weights
    said = [r.getMessage() for r in caplog.records if "short-batch weight copies" in r.getMessage()]
    assert len(said) == 1 and ("copies made" in said[0]) == cpu.bf16_blocked_weights, said
    plain = SentenceEncoder(tiny_models_dir / "tiny-bert", dtype="bfloat16", cpu=cpu)
    assert _cosines(bf16.embed(bf16.tokenize(TEXTS)), plain.embed(plain.tokenize(TEXTS))).min() >= 0.9999


@pytest.mark.skipif(not blocked_kernels_available(), reason="this torch build has no oneDNN prepacked-linear ops")
def test_the_bf16_reorder_probe_tells_the_truth_about_this_cpu():
    """The probe answers yes exactly where oneDNN's bf16 reorder works on this machine (AVX2-only: it raises)."""
    weight = torch.randn(16, 8).to(torch.bfloat16)
    try:
        Dense(weight, torch.zeros(16, dtype=torch.bfloat16)).add_blocked_copy()
        works = True
    except RuntimeError:
        works = False
    assert works == cpu_features().bf16_blocked_weights, cpu_features().describe()


def test_a_kernel_that_refuses_despite_the_probe_falls_back_at_load(tiny_models_dir, monkeypatch, caplog):
    """A CPU the probe misjudges: the reorder raises, the load still succeeds without copies, same vectors."""
    said_yes = CpuFeatures(frozenset({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"}))

    def refuses(self):
        raise RuntimeError("mkldnn_reorder_linear_weight: bf16 path needs the cpu support avx_ne_convert or avx512bw")

    monkeypatch.setattr(Dense, "add_blocked_copy", refuses)
    with caplog.at_level(logging.INFO, logger="embedding_server.model.packed"):
        bf16 = SentenceEncoder(tiny_models_dir / "tiny-bert", dtype="bfloat16", short_batch_copy_mb=64, cpu=said_yes)
    assert bf16.padding_free and not bf16._packed.short_batch_copy
    assert "short-batch weight copies not used (bfloat16): mkldnn_reorder_linear_weight" in caplog.text
    plain = SentenceEncoder(tiny_models_dir / "tiny-bert", dtype="bfloat16")
    assert _cosines(bf16.embed(bf16.tokenize(TEXTS)), plain.embed(plain.tokenize(TEXTS))).min() >= 0.9999


def test_bge_m3_heads_in_bf16_stay_close_to_flagembedding():
    bf16 = SentenceEncoder(M3_FOLDER, dtype="bfloat16")
    job = bf16.start(bf16.tokenize(M3_REFERENCE["texts"]), heads=frozenset({DENSE, SPARSE, COLBERT}))
    job.run()
    dense = job.result[DENSE]
    assert _cosines(dense, np.asarray(M3_REFERENCE["dense"])).min() >= 0.999
    for got, want in zip(job.result[COLBERT], M3_REFERENCE["colbert"]):
        assert _cosines(got, np.asarray(want)).min() >= 0.99
    for (ids, weights), want in zip(job.result[SPARSE], M3_REFERENCE["sparse"]):
        ours = dict(zip(map(str, ids.tolist()), weights.tolist()))
        shared = set(ours) & set(want)
        assert len(shared) >= len(want) - 1 and all(abs(ours[k] - want[k]) <= 0.05 * max(1.0, want[k]) for k in shared)


def test_dtype_resolution_and_cpu_detection(tmp_path):
    assert resolve_dtype("auto", "avx512_bf16") == ("bfloat16", "auto: this CPU has avx512_bf16")
    assert resolve_dtype("auto", None)[0] == "float32"
    dtype, why = resolve_dtype("bfloat16", None)
    assert dtype == "bfloat16" and "emulated" in why
    assert resolve_dtype("float32", "amx_bf16") == ("float32", "requested")
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512vl avx512dq avx512_bf16\n")
    zen4 = CpuFeatures(read_flags(cpuinfo))
    assert zen4.native_bf16 == "avx512_bf16" and zen4.bf16_blocked_weights
    assert zen4.narrowed().native_bf16 is None and not zen4.narrowed().bf16_blocked_weights
    assert "avx2" in zen4.narrowed().flags and "EMBED_CPU_FEATURES=avx2" in zen4.narrowed().describe()
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 amx_tile amx_bf16 avx512f\n")
    assert CpuFeatures(read_flags(cpuinfo)).native_bf16 == "amx_bf16"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2 avx_ne_convert\n")
    assert CpuFeatures(read_flags(cpuinfo)).bf16_blocked_weights  # Intel's AVX2 cores with AVX-NE-CONVERT
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    epyc_avx2 = CpuFeatures(read_flags(cpuinfo))
    assert epyc_avx2.native_bf16 is None and not epyc_avx2.bf16_blocked_weights
    assert cpu_features("avx2").flags <= cpu_features("detect").flags
    with pytest.raises(ValueError):
        cpu_features("avx512")
