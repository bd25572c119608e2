"""benchmarks/recipe_study_twin.py: tokens counted from random init, the best FP twin, the verdicts."""
import pytest

from benchmarks import recipe_study_report as report
from benchmarks import recipe_study_twin as twin


def run(name, bpb, steps, init=None):
    return {"run": name, "eval": {"bits_per_byte": bpb, "perplexity": 2 ** bpb}, "tokens": steps * 2048,
            "steps": steps, "init_from": init, "curve": [[1, 3.0, None]]}


def test_tokens_since_init_follow_the_init_chain_and_the_best_fp_twin_is_compared():
    runs = [run("fp", 2.30, 400)]
    for s, noise in ((1, 0.0), (2, 0.01)):
        runs += [run(f"fp_cont_lr1e-3_s{s}", 2.19 + noise, 200, "fp"), run(f"fp_cont_lr1e-2_s{s}", 2.25 + noise, 200, "fp"),
                 run(f"qat_s{s}", 2.23 + noise, 200, "fp"), run(f"kd2_s{s}", 2.195 + noise, 50, f"qat_s{s}"),
                 run(f"kd1_s{s}", 2.10 + noise, 250, "fp")]
    agg = report.aggregate(runs)
    assert agg["fp"]["total_tokens"] == 400 * 2048
    assert agg["qat"]["total_tokens"] == 600 * 2048 and agg["kd2"]["total_tokens"] == 650 * 2048
    best = twin.best_fp(agg)
    assert best == "fp_cont_lr1e-3"
    sigma = report.seed_noise(agg)
    v = twin.compare_to_best(agg, sigma, best)
    assert v["qat"]["delta_bpb"] == pytest.approx(0.04) and v["qat"]["verdict"] == "agrees"     # FP better
    assert v["kd2"]["verdict"].startswith("tie") and v["kd1"]["verdict"] == "reversed"
    assert v["kd1"]["tokens"] - v["kd1"]["fp_tokens"] == 50 * 2048
    assert twin.runs((1,)) == ["qat_s1", "kd2_s1", "kd1_s1", "fp_cont_lr1e-3_s1", "fp_cont_lr3e-3_s1",
                               "fp_cont_lr1e-2_s1"]
