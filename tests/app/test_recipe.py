"""A 2-stage recipe end to end (full-precision teacher -> ternary QAT from its weights with distillation),
what init_from_checkpoint loads, skipping finished stages, and the recipe's own errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from bitcpm_ms.app.recipe import load_recipe, stage_status
from bitcpm_ms.errors import ConfigError

from ..helpers import ROOT, TINY_YAML, read_metrics, step_records

RECIPE = os.path.join(ROOT, "run", "run_recipe.py")
MODEL = ["--model.model_config.hidden_size", "64", "--model.model_config.num_layers", "1",
         "--model.model_config.seq_length", "32", "--model.model_config.vocab_size", "512",
         "--model.model_config.intermediate_size", "128", "--model.model_config.dim_model_base", "16",
         "--callbacks.BitCPMMetricsMonitor.log_interval", "1", "--lr_schedule.warmup_ratio", "0.4",
         "--quant.group_size", "32"]


def _data_args(ds):
    return ["--train_dataset.data_loader.dataset_dir", str(ds / "train"),
            "--eval_dataset.data_loader.dataset_dir", str(ds / "validation"),
            "--data.output_dir", str(ds), "--processor.tokenizer.vocab_file", str(ds / "tokenizer.model")]


def _write_recipe(path, out):
    path.write_text(yaml.safe_dump({
        "output_dir": str(out), "base_config": TINY_YAML,
        "overrides": {"callbacks.BitCPMCheckpointMonitor.save_checkpoint_steps": 1,
                      "callbacks.BitCPMCheckpointMonitor.keep_checkpoint_max": 10},
        "stages": [
            {"name": "fp", "max_steps": 4, "overrides": {"quant.enabled": False}},
            {"name": "qat_kd", "max_steps": 3, "teacher": "fp", "distill": {"temperature": 2.0, "alpha": 0.5},
             "overrides": {"quant.enabled": True}},
        ]}))
    return str(path)


def _run_recipe(recipe, ds, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_v="3")
    return subprocess.run([sys.executable, RECIPE, "--config", recipe, *MODEL, *_data_args(ds), *extra],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory, small_dataset):
    ds = small_dataset[0]
    root = tmp_path_factory.mktemp("recipe")
    recipe = _write_recipe(root / "recipe.yaml", root / "out")
    res = _run_recipe(recipe, ds)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return {"recipe": recipe, "out": root / "out", "ds": ds, "stdout": res.stdout}


def _by_step(run_dir):
    import mindspore as ms
    out = {}
    for d, _, files in os.walk(os.path.join(run_dir, "checkpoint")):
        for f in files:
            if f.endswith(".ckpt"):
                arrays = {k: v.asnumpy() for k, v in ms.load_checkpoint(os.path.join(d, f)).items()}
                out[int(arrays["global_step"].reshape(-1)[0])] = arrays
    return out


def test_recipe_runs_both_stages_and_ends_with_an_eval_table(recipe_run):
    out = recipe_run["out"]
    table = json.load(open(out / "recipe_eval.json"))["stages"]
    assert [r["stage"] for r in table] == ["fp", "qat_kd"]
    assert table[0]["weights"] == "full precision" and table[1]["weights"] == "ternary g=32"
    assert table[1]["init_from"] == "fp" and table[1]["teacher"] == "fp"
    for row in table:
        assert row["bits_per_byte"] > 0 and row["perplexity"] > 1
    assert "| qat_kd | ternary g=32 | fp | fp | 3 |" in (out / "recipe_eval.md").read_text()
    assert "| fp | full precision |" in recipe_run["stdout"]
    rec = step_records(read_metrics(out / "qat_kd"))
    assert sorted(rec) == [1, 2, 3]
    for r in rec.values():                # total = (1 - alpha) CE + alpha KD, all three logged
        assert r["loss"] == pytest.approx(0.5 * r["ce_loss"] + 0.5 * r["kd_loss"], rel=1e-5)


def test_init_from_loads_weights_but_not_optimizer_or_step(recipe_run):
    fp, qat = _by_step(recipe_run["out"] / "fp"), _by_step(recipe_run["out"] / "qat_kd")
    assert sorted(fp) == [1, 2, 3, 4] and sorted(qat) == [1, 2, 3]      # the stage counts from step 0 again
    source, first = fp[4], qat[1]
    weights = [k for k in first if k.startswith(("model.", "lm_head."))]
    assert len(weights) >= 10
    for k in weights:                      # step 1 runs at lr 0 (re-warmup): weights are the fp weights
        np.testing.assert_array_equal(first[k], source[k], err_msg=k)
    assert float(np.abs(source["adam_v." + weights[0]]).max()) > 0
    for k in weights:                      # fresh AdamW after one step: m = (1-b1) g, v = (1-b2) g^2
        m, v = first["adam_m." + k].astype(np.float64), first["adam_v." + k].astype(np.float64)
        np.testing.assert_allclose(v, (0.05 / 0.1 ** 2) * m ** 2, rtol=1e-4, atol=1e-18, err_msg=k)
    assert int(first["skipped_steps"].reshape(-1)[0]) == 0
    # the teacher is in no checkpoint of the distilling stage
    assert not [k for arrays in qat.values() for k in arrays if "teacher" in k or k.startswith("distill.")]
    lr = {s: r["lr"] for s, r in step_records(read_metrics(recipe_run["out"] / "qat_kd")).items()}
    assert lr[1] == 0.0 and lr[2] > 0


def test_rerun_skips_finished_stages_and_detects_state(recipe_run):
    res = _run_recipe(recipe_run["recipe"], recipe_run["ds"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.count("finished, skipped") == 2 and "step 1/" not in res.stdout
    recipe = load_recipe(recipe_run["recipe"])
    fp = recipe.stage("fp")
    assert stage_status(recipe, fp)[0] == "done"
    fp.max_steps = 6                                   # more steps than its checkpoints: resume
    assert stage_status(recipe, fp)[0] == "resume"
    fp.max_steps = 4
    os.rename(recipe_run["out"] / "fp" / "eval.json", recipe_run["out"] / "fp" / "eval.json.bak")
    try:
        assert stage_status(recipe, fp)[0] == "eval"   # trained, not evaluated: evaluate only
    finally:
        os.rename(recipe_run["out"] / "fp" / "eval.json.bak", recipe_run["out"] / "fp" / "eval.json")


@pytest.mark.parametrize("stages, match", [
    ([{"name": "a", "max_steps": 0}], "max_steps must be a positive integer"),
    ([{"name": "a", "max_steps": 2}, {"name": "a", "max_steps": 2}], "used twice"),
    ([{"name": "a", "max_steps": 2, "teacher": "b"}], "teacher 'b' is not an earlier stage"),
    ([{"name": "a", "max_steps": 2, "distill": {"alpha": 0.5}}], "needs teacher"),
    ([{"name": "a", "max_steps": 2}, {"name": "b", "max_steps": 2, "teacher": "a",
                                      "distill": {"teacher_checkpoint": "x"}}], "the recipe sets the teacher"),
    ([{"name": "a b", "max_steps": 2}], "name must be"),
    ([{"name": "a", "max_steps": 2, "lr": 1}], "unknown key"),
])
def test_bad_recipes_are_named(tmp_path, stages, match):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({"base_config": TINY_YAML, "stages": stages}))
    with pytest.raises(ConfigError, match=match):
        load_recipe(str(path))


def test_study_verdicts_follow_the_seed_noise_rule():
    """benchmarks/recipe_study_report.py: a pair is ordered only beyond 2 sigma of the difference."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        import recipe_study_report as rep
    finally:
        sys.path.pop(0)

    def run(name, bpb):
        return {"run": name, "eval": {"bits_per_byte": bpb, "perplexity": 2 ** bpb}, "tokens": 100, "steps": 1,
                "curve": [[1, 3.0, None]]}
    runs = [run("qat_s1", 2.00), run("qat_s2", 2.02), run("g32_s1", 1.90), run("g32_s2", 1.92),
            run("g-1_s1", 2.005), run("g-1_s2", 2.025)]
    agg = rep.aggregate(runs)
    sigma = rep.seed_noise(agg)
    assert sigma == pytest.approx(np.sqrt(0.02 ** 2 / 2))
    verdicts = rep.judge(agg, sigma, [("g32", "qat"), ("qat", "g-1"), ("qat", "g32")])
    assert [v["verdict"] for v in verdicts] == ["agrees", "tie (within seed noise)", "reversed"]
    assert rep.overall(verdicts[:2]) == "agrees where resolved; the rest are ties within seed noise"
    assert rep.overall(verdicts) == "partly disagrees"
    assert rep.judge(rep.aggregate(runs[::2]), None, [("g32", "qat")])[0]["verdict"] == "agrees (1 seed)"
