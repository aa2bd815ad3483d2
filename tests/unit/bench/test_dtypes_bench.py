"""The bf16 / fp32 comparison's report: verdicts follow the per-round ratios, the ceiling line follows the forward
alone, and a CPU without native bf16 gets a skip with its reason."""

from __future__ import annotations

from bench import dtypes

MACHINE = {"cpu": "Test CPU", "physical_cores": 2, "torch": "2.13.0"}


def _round(bulk: float, p50: float, qps: float) -> dict:
    return {"bulk": {"inputs_per_s": bulk}, "single": {"p50_ms": p50}, "concurrent": {"queries_per_s": qps}}


def _result() -> dict:
    rounds = [{"float32": _round(100, 4.0, 600), "bfloat16": _round(b, p, q)}
              for b, p, q in ((250, 2.8, 960), (150, 3.2, 840), (260, 2.9, 900))]
    r = {"machine": MACHINE, "native_bf16": "avx512_bf16", "model": "/models/m", "rounds": rounds,
         "float32": {"rss_load_mb": 545.0, "rss_warm_mb": 600.0, "loop_cpu_ms": 1.0},
         "bfloat16": {"rss_load_mb": 520.0, "rss_warm_mb": 580.0, "loop_cpu_ms": 1.0},
         "forward_only": {"float32_1_ms": 3.0, "bfloat16_1_ms": 2.4, "float32_8_ms": 8.0, "bfloat16_8_ms": 5.0}}
    r["targets"] = dtypes.targets(r, bge_m3=False)
    return r


def test_each_target_is_the_median_of_its_rounds():
    verdicts = {t["target"]: t for t in _result()["targets"]}
    bulk = verdicts["bulk throughput bf16 / fp32"]
    assert bulk["measured"] == 2.5 and bulk["rounds"] == [2.5, 1.5, 2.6] and bulk["pass"]
    single = verdicts["single-query p50 bf16 / fp32"]
    assert abs(single["measured"] - 0.725) < 1e-9 and single["pass"]
    concurrent = verdicts["8 concurrent clients bf16 / fp32"]
    assert concurrent["measured"] == 1.5 and concurrent["pass"]
    rss = verdicts["RSS after load bf16 - fp32 (MB)"]
    assert rss["measured"] == -25 and rss["pass"]


def test_a_target_fails_past_its_threshold():
    r = _result()
    for x in r["rounds"]:
        x["bfloat16"]["concurrent"]["queries_per_s"] = 840  # 1.4x in every round
    verdict = next(t for t in dtypes.targets(r, bge_m3=False) if t["target"].startswith("8 concurrent"))
    assert abs(verdict["measured"] - 1.4) < 1e-9 and not verdict["pass"]


def test_the_report_states_the_ceiling_the_forward_alone_sets():
    text = dtypes.markdown(_result())
    assert "| forward alone, 1 query (in process) | 3.00 ms | 2.40 ms | 0.800x |" in text
    assert "cannot be lower than the forward alone's (0.800x)" in text
    assert "higher than 1.60x (1 / 0.625)" in text
    assert "| single-query p50 bf16 / fp32 | 0.725x (rounds 0.700, 0.800, 0.725) | <= 0.75 | PASS |" in text


def test_a_cpu_without_native_bf16_is_reported_as_skipped():
    r = {"machine": MACHINE, "native_bf16": None, "model": "/models/m", "skipped": "no native bf16 here"}
    text = dtypes.markdown(r)
    assert "native bf16: no" in text and "**Skipped**: no native bf16 here." in text
