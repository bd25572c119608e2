"""The verdict machinery of the benchmarks (benchmarks/machine.py, benchmarks/targets.py,
benchmarks/generation_targets.py): a target is met or missed only when the whole interval says so,
the bootstrap interval follows the rounds' spread, and the README table is built from the JSONs."""
import json

from benchmarks import generation_targets, targets
from benchmarks.machine import bootstrap_ci, median_ratio, target, verdict


def test_verdict_needs_the_whole_interval_on_one_side():
    assert verdict([1.02, 1.3], 1.0) == "met"
    assert verdict([0.7, 0.98], 1.0) == "missed"
    assert verdict([0.9, 1.1], 1.0) == "not resolved"
    assert verdict([0.02, 0.04], 0.05, higher_is_better=False) == "met"
    assert verdict([0.06, 0.08], 0.05, higher_is_better=False) == "missed"
    assert verdict([0.03, 0.07], 0.05, higher_is_better=False) == "not resolved"
    assert verdict([1.0, 1.0], 1.0) == "met"                # a point exactly at the bar passes


def test_bootstrap_interval_follows_the_spread_between_rounds():
    steady = [{"a": [1.0, 1.0], "b": [2.0, 2.0]} for _ in range(8)]
    est, ci = bootstrap_ci(steady, median_ratio("b", "a"))
    assert est == 2.0 and ci == [2.0, 2.0]
    # the load drifts between rounds: both variants slow down together, the ratio stays 2
    drifting = [{"a": [1.0 + r], "b": [2.0 * (1.0 + r)]} for r in range(8)]
    assert bootstrap_ci(drifting, median_ratio("b", "a"))[1] == [2.0, 2.0]
    # the ratio itself varies between rounds: the interval covers the estimate and widens with it
    noisy = [{"a": [1.0], "b": [2.0 + (0.3 if r % 2 else -0.3)]} for r in range(10)]
    est, ci = bootstrap_ci(noisy, median_ratio("b", "a"))
    assert ci[0] < est < ci[1] and 1.7 <= ci[0] and ci[1] <= 2.3
    wider = [{"a": [1.0], "b": [2.0 + (0.9 if r % 2 else -0.9)]} for r in range(10)]
    lo, hi = bootstrap_ci(wider, median_ratio("b", "a"))[1]
    assert hi - lo > ci[1] - ci[0]
    assert bootstrap_ci(noisy, median_ratio("b", "a")) == bootstrap_ci(noisy, median_ratio("b", "a"))  # seeded


def test_targets_table_from_written_and_legacy_jsons(tmp_path):
    rec = target("ours / torch", 1.4, [1.1, 1.8], 1.0, unit="x", method="bootstrap")
    doc = {"targets": [rec], "machine": {"cpu": "AMD EPYC", "simd": ["avx2", "avx512f", "avx512_vnni"],
                                         "load": [5.5, 5.0, 4.0]}, "time": 0}
    (tmp_path / "new.json").write_text(json.dumps(doc))
    legacy = {"runs": [{"name": "full-2w", "wall_s_incl_startup": 200.0}, {"name": "full-1w",
                                                                           "wall_s_incl_startup": 170.0}]}
    (tmp_path / "data_throughput.json").write_text(json.dumps(legacy))
    (tmp_path / "other.json").write_text(json.dumps({"no": "targets"}))
    (tmp_path / "bars.json").write_text(json.dumps({"targets": {"a8": 1.2}}))        # bars, not verdicts
    own = {"targets": {"100m packed_a8 decode": {"ratio": {"median": 0.62, "min": 0.51, "max": 0.76}, "target": 0.67,
                                                 "verdict": "missed"}}}
    (tmp_path / "generation_speed_2t.json").write_text(json.dumps(own))
    unread = []
    rows = targets.collect(str(tmp_path), unread)
    assert [(name, r["verdict"]) for name, r, *_ in rows] == [("data_throughput.json", "not resolved"),
                                                              ("generation_speed_2t.json", "missed"),
                                                              ("new.json", "met")]
    assert unread == ["bars.json"]
    text = targets.markdown(rows)
    assert "AMD EPYC (AVX-512 VNNI)" in text and "| 5.5 |" in text and "(judged later)" in text
    assert "**not resolved**" in text and "170 s to 200 s" in text


def test_generation_targets_from_round_extremes():
    def row(variant, med, lo, hi):
        return {"variant": variant, "batch": 1, "decode_tok_s": {"median": med, "min": lo, "max": hi}}
    doc = {"runs": {"tiny/threads=1": {"table": [row("packed_a8", 300, 280, 320),
                                                 row("greedy_generate (before)", 12, 11, 13)]},
                    "100m/threads=1": {"table": [row("packed_a8", 70, 60, 80), row("fake_quant", 5, 4, 6)]}},
           "llamacpp": {"100m": {"1": {"decode": {"mean_tok_s": 100.0, "samples_tok_s": [95.0, 100.0, 105.0]}}}}}
    tiny, packed, lc = generation_targets.targets(doc)
    assert "tiny" in tiny["target"] and tiny["verdict"] == "met"                 # 280 / 13 = 21.5 >= 20
    assert "fake-quant" in packed["target"] and packed["interval"] == [60 / 6, 80 / 4]
    assert "llama.cpp" in lc["target"] and lc["verdict"] == "not resolved" and lc["interval"] == [95 / 80, 105 / 60]


def test_bitnet_rounds_parse_llama_batched_bench_and_name_a_missing_build(tmp_path):
    """generation_speed --bitnet_dir: the PP/TG row of llama-batched-bench (output of the 2024 fork's
    build, 100M model) gives the prefill and decode rates; a directory without the tools is a named error."""
    import pytest
    from benchmarks.generation_bitnet import BitnetError, bench_round, parse_batched_bench
    text = ("|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |\n"
            "|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|\n"
            "|   128 |    128 |    1 |    256 |    0.163 |   783.24 |    0.322 |   397.83 |    0.485 |   527.65 |\n")
    assert parse_batched_bench(text, 128, 128) == {"prefill_tok_s": 783.24, "decode_tok_s": 397.83}
    with pytest.raises(BitnetError, match="no PP 64 / TG 128 row"):
        parse_batched_bench(text, 64, 128)
    with pytest.raises(BitnetError, match="llama-batched-bench is missing"):
        bench_round("m.gguf", 1, 128, 128, str(tmp_path))
