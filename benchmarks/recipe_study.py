#!/usr/bin/env python3
"""The BitCPM-CANN recipe in miniature: the report's Tables 1, 5, 6, 7 and the ternary-to-FP gap,
reproduced on real text (GCIDE) with the tiny model.

    python3 -m benchmarks.recipe_study              # the study, 32 runs (~2 hours on 2 quiet cores), resumable
    python3 -m benchmarks.recipe_study --quick      # the same pipeline, shrunk (end-to-end check)
    python3 -m benchmarks.recipe_study --report     # only rebuild JSON, figure, tables and docs/recipe.md
    python3 -m benchmarks.recipe_study --plan       # list the runs and the time estimate, run nothing
    python3 -m benchmarks.recipe_study --twin       # fp, qat, kd2, kd1 and the FP-LR sweep, checkpoints kept
                                                    # (the FP-twin comparison, and the models of benchmarks/retention.py)

Every run is a stage of bitcpm_ms.app.recipe (one run/run_bitcpm.py process: train, then eval on
the held-out split) at a fixed budget of tokens (steps x batch 8 x 256 tokens; --quick: batch 2):

  fp            full-precision pretraining (P steps): the "full-precision checkpoint" and the teacher
  fp_cont       fp continued for N steps: the FP twin at the QAT runs' total tokens
  per seed s (data order and, from scratch, the init; seeds 1 and 2 for every run; --sweep_seeds 1
  runs the g/space/lr sweeps at seed 1 only, 22 runs in about 1.4 hours):
  scratch_s     ternary from random init, N steps                       (report 5.1: start from FP)
  qat_s         ternary from the fp weights, N steps: the reference QAT run (ternary, g 64, LR 1e-2)
  qat_more_s    qat_s + M more steps of pure QAT                        (Table 5 "pure QAT")
  kd2_s         qat_s + M steps distilling from fp                      (Table 5 "two-stage")
  kd1_s         from fp, N + M steps distilling during QAT              (Table 5 "distillation during QAT")
  g<G>_s        group size G in -1 (per channel), 256, 128, 32 (g 64 is qat_s)   (Table 7)
  <space>_s     asym-4, half-sym-4, int-sym-4, 5-value (ternary is qat_s)       (Table 1)
  lr<L>_s       QAT learning rate 5e-3, 1.5e-2 (1e-2 is qat_s)                   (Table 6)
  fp_cont_lr<L>_s  (--twin only) fp continued N steps at FP learning rate 1e-3, 3e-3, 1e-2: the FP twin at
                the QAT runs' total tokens with its LR swept (the report compares against a tuned FP model);
                `fp` itself stays at 3e-3 (the init and teacher of every ternary run)

A finished run leaves benchmarks/results/recipe_study/<run>.json (eval + loss curve) and is
skipped when the study runs again; an interrupted run resumes from its last checkpoint. Checkpoints
no later run needs are deleted once a run's JSON is written (--keep_checkpoints keeps them).
The analysis (ordering vs the report, seed noise, gap) is benchmarks/recipe_study_report.py.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

from bitcpm_ms.app.recipe import Recipe, Stage, check_recipe, run_stage, stage_status
from bitcpm_ms.errors import BitCPMError
from bitcpm_ms.fileio import atomic_json

from benchmarks import recipe_study_report as report
from benchmarks import recipe_study_twin as twin

TINY_YAML = os.path.join(ROOT, "yaml_configs", "bitcpm_tiny_cpu.yaml")
SPACES = {"asym4": "asym-4-value", "halfsym4": "half-sym-4-value", "intsym4": "int-sym-4-value", "five": "5-value"}
GROUPS = (-1, 256, 128, 32)
LRS = {"lr5e-3": 5e-3, "lr1.5e-2": 1.5e-2}
FP_LRS = {"1e-3": 1e-3, "3e-3": 3e-3, "1e-2": 1e-2}     # the FP twin's LR sweep (fp_cont_lr<L>_s<seed>)
QAT = {"quant.enabled": True, "quant.quant_space": "ternary", "quant.group_size": 64,
       "lr_schedule.learning_rate": 1e-2}
DISTILL = {"temperature": 1.0, "alpha": 0.5}
# seconds on 2 quiet cores (tiny model, batch 8 x 256): per step by kind, and per run (start-up,
# graph compile, held-out eval); replaced by the medians of the runs done so far
PRIOR_STEP_S = {"fp": 0.85, "qat": 0.9, "distill": 1.3}
PRIOR_RUN_OVERHEAD_S = 45.0

# seeds: the Table 5 runs and the ternary-vs-scratch runs (they also give the seed noise);
# sweep_seeds: the group-size, quantization-space and LR sweeps (both seeds: several of their pairs
# differ by less than the seed noise; --sweep_seeds 1 drops the second, about 40 minutes less)
FULL = dict(fp_steps=400, steps=200, more_steps=50, seeds=(1, 2), sweep_seeds=(1, 2), batch=8, model={})
# --quick: the same runs with one seed, a 1-layer model, batch 2 and short runs (an end-to-end check
# of the pipeline, not a result)
QUICK = dict(fp_steps=30, steps=16, more_steps=8, seeds=(1,), sweep_seeds=(1,), batch=2,
             model={"model.model_config.num_layers": 1})


def plan(p: dict, out_dir: str, fp_sweep: bool = False) -> Recipe:
    """The study as recipe stages (each with its dependencies: init_from, teacher); fp_sweep adds the
    FP twin's LR sweep (the --twin study)."""
    b = p["batch"]
    common = {"callbacks.BitCPMMetricsMonitor.log_interval": 10,
              "callbacks.BitCPMCheckpointMonitor.keep_checkpoint_max": 1, "runner_config.batch_size": b,
              "train_dataset.batch_size": b, "model.model_config.batch_size": b, **p["model"]}
    stages = [Stage("fp", p["fp_steps"], {"quant.enabled": False, "lr_schedule.learning_rate": 3e-3,
                                          "seed": 10, "train_dataset.seed": 10}, init_from=None),
              Stage("fp_cont", p["steps"], {"quant.enabled": False, "lr_schedule.learning_rate": 3e-3,
                                            "seed": 10, "train_dataset.seed": 11}, init_from="fp")]
    for s in p["seeds"]:
        seed = {"seed": s, "train_dataset.seed": s}

        def qat(name, steps, init="fp", teacher=None, **extra):
            stages.append(Stage(f"{name}_s{s}", steps, {**QAT, **seed, **extra}, init_from=init, teacher=teacher,
                                distill=dict(DISTILL) if teacher else {}))
        qat("scratch", p["steps"], init=None)
        qat("qat", p["steps"])
        qat("qat_more", p["more_steps"], init=f"qat_s{s}")
        qat("kd2", p["more_steps"], init=f"qat_s{s}", teacher="fp")
        qat("kd1", p["steps"] + p["more_steps"], teacher="fp")
        for name, lr in FP_LRS.items() if fp_sweep else ():     # the FP twin at the QAT runs' tokens, LR swept
            stages.append(Stage(f"fp_cont_lr{name}_s{s}", p["steps"], {"quant.enabled": False,
                                "lr_schedule.learning_rate": lr, **seed}, init_from="fp"))
        if s not in p["sweep_seeds"]:
            continue
        for g in GROUPS:
            qat(f"g{g}", p["steps"], **{"quant.group_size": g})
        for name, space in SPACES.items():
            qat(name, p["steps"], **{"quant.quant_space": space})
        for name, lr in LRS.items():
            qat(name, p["steps"], **{"lr_schedule.learning_rate": lr})
    # the scratch and Table 5 runs of every seed first (they also give the seed noise), then the sweeps
    core = [st for st in stages[2:] if st.name.rpartition("_s")[0] in ("scratch", "qat", "qat_more", "kd2", "kd1")
            or st.name.startswith("fp_cont_lr")]
    stages = stages[:2] + core + [st for st in stages[2:] if st not in core]
    for st in stages:            # the final checkpoint only (and one halfway, to resume from)
        st.overrides.update(common)
        st.overrides["callbacks.BitCPMCheckpointMonitor.save_checkpoint_steps"] = max(st.max_steps // 2, 1)
        # warmup 10%, at least one step (WarmUpStableDecayLR is NaN with 0 warmup steps)
        st.overrides["lr_schedule.warmup_ratio"] = max(0.1, 1.0 / st.max_steps)
    return check_recipe(Recipe(output_dir=out_dir, base_config=TINY_YAML, stages=stages))


def select(recipe: Recipe, names) -> Recipe:
    """The recipe cut to the named runs and the runs they start from or distil from (--only)."""
    by_name = {st.name: st for st in recipe.stages}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise SystemExit(f"--only: no run named {unknown}; the runs are {list(by_name)}")
    keep, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo += [ref for ref in (by_name[name].init_from, by_name[name].teacher) if ref]
    return Recipe(output_dir=recipe.output_dir, base_config=recipe.base_config,
                  stages=[st for st in recipe.stages if st.name in keep])


def kind(st: Stage) -> str:
    return "distill" if st.teacher else ("qat" if st.overrides.get("quant.enabled") else "fp")


def _read_metrics(run_dir: str):
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def summarize(recipe: Recipe, st: Stage, wall_s: float) -> dict:
    """One run's result: settings, held-out eval, loss curve, measured step time."""
    run_dir = recipe.stage_dir(st.name)
    with open(os.path.join(run_dir, "eval.json"), encoding="utf-8") as f:
        ev = json.load(f)
    steps = {r["step"]: r for r in _read_metrics(run_dir) if "step" in r}     # a resumed run: the last record
    step_times = [r["step_time_s"] for r in steps.values() if r.get("step_time_s")]
    tokens_per_step = int(st.overrides["runner_config.batch_size"]) * 256
    return {"run": st.name, "kind": kind(st), "steps": st.max_steps, "tokens": st.max_steps * tokens_per_step,
            "init_from": st.init_from, "teacher": st.teacher, "distill": st.distill,
            "overrides": {k: v for k, v in st.overrides.items() if not k.startswith("callbacks.")},
            "eval": {k: ev.get(k) for k in ("loss", "perplexity", "bits_per_byte", "bits_per_token", "tokens")},
            "quant": ev.get("quant"),
            "curve": [[s, r.get("ce_loss", r.get("loss")), r.get("kd_loss")] for s, r in sorted(steps.items())],
            # ternary health per log (training/ternary_health.py): zero codes, codes changed, near a boundary
            "health": [[s, r["zero_code_frac"], r.get("code_change_frac"), r["near_boundary_frac"]]
                       for s, r in sorted(steps.items()) if "zero_code_frac" in r],
            "median_step_s": statistics.median(step_times) if step_times else None, "wall_s": round(wall_s, 1)}


def _estimate(st: Stage, done: list) -> float:
    per_kind = [r["median_step_s"] for r in done if r["kind"] == kind(st) and r.get("median_step_s")]
    step_s = statistics.median(per_kind) if per_kind else PRIOR_STEP_S[kind(st)]
    overheads = [r["wall_s"] - r["steps"] * r["median_step_s"] for r in done if r.get("median_step_s")]
    overhead = statistics.median(overheads) if overheads else PRIOR_RUN_OVERHEAD_S
    return overhead + st.max_steps * step_s


def _fmt(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m" if m >= 60 else f"{m}m{s:02d}s"


def _needed_later(recipe: Recipe, index: int, name: str) -> bool:
    return any(name in (st.init_from, st.teacher) for st in recipe.stages[index + 1:])


def run_study(recipe: Recipe, results_dir: str, keep_checkpoints: bool) -> None:
    os.makedirs(results_dir, exist_ok=True)
    done = [report.load_run(results_dir, st.name) for st in recipe.stages]
    done = [r for r in done if r]
    ckpts, t0 = {}, time.time()
    for i, st in enumerate(recipe.stages):
        path = os.path.join(results_dir, f"{st.name}.json")
        remaining = sum(_estimate(x, done) for x in recipe.stages[i:]
                        if not os.path.isfile(os.path.join(results_dir, f"{x.name}.json")))
        if os.path.isfile(path):
            print(f"[study {i + 1}/{len(recipe.stages)}] {st.name}: done (results/{os.path.basename(path)})", flush=True)
            if any(st.name in (x.init_from, x.teacher) and not os.path.isfile(os.path.join(results_dir, f"{x.name}.json"))
                   for x in recipe.stages[i + 1:]):               # a run not yet done starts from it
                status, ckpt = stage_status(recipe, st)
                if status != "done":
                    raise SystemExit(f"{st.name} is needed by a later run but its checkpoint is gone: delete "
                                     f"{path} to train it again")
                ckpts[st.name] = ckpt
            continue
        print(f"\n[study {i + 1}/{len(recipe.stages)}] {st.name} ({kind(st)}, {st.max_steps} steps): "
              f"elapsed {_fmt(time.time() - t0)}, remaining ~{_fmt(remaining)}", flush=True)
        t_run = time.time()
        ckpts[st.name] = run_stage(recipe, st, ckpts)
        result = summarize(recipe, st, time.time() - t_run)
        atomic_json(result, path)
        done.append(result)
        print(f"[study] {st.name}: bits/byte {result['eval']['bits_per_byte']:.4f}, "
              f"{_fmt(result['wall_s'])}", flush=True)
        for j, prev in enumerate(recipe.stages[:i + 1]):
            if not keep_checkpoints and not _needed_later(recipe, i, prev.name) and \
                    os.path.isfile(os.path.join(results_dir, f"{prev.name}.json")):
                shutil.rmtree(os.path.join(recipe.stage_dir(prev.name), "checkpoint"), ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shrunk end-to-end check (1 seed, 1 layer, short runs)")
    ap.add_argument("--report", action="store_true", help="only rebuild the JSON, figure, tables and docs")
    ap.add_argument("--plan", action="store_true", help="list the runs and the time estimate")
    ap.add_argument("--output_dir", default=None, help="run directories (default output/recipe_study[_quick])")
    ap.add_argument("--results_dir", default=None, help="per-run JSON, summary JSON, figure, table")
    ap.add_argument("--keep_checkpoints", action="store_true")
    ap.add_argument("--sweep_seeds", default=None, help="seeds of the sweeps, e.g. 1 (default: 1,2)")
    ap.add_argument("--twin", action="store_true", help="only the FP-twin runs (fp, qat, kd2, kd1, FP-LR sweep) "
                    "in output/recipe_study_twin, checkpoints kept; its own report and docs section")
    ap.add_argument("--only", default=None, help="comma-separated runs to train (with the runs they start "
                    "from); the report still covers every run whose JSON exists")
    args = ap.parse_args()
    p, tag = (QUICK, "recipe_study_quick") if args.quick else (FULL, "recipe_study_twin" if args.twin else "recipe_study")
    if args.sweep_seeds:
        p = dict(p, sweep_seeds=tuple(int(x) for x in args.sweep_seeds.split(",")))
    out = os.path.abspath(args.output_dir or os.path.join(ROOT, "output", tag))
    results = os.path.abspath(args.results_dir or (os.path.join(out, "results") if args.quick
                                                   else os.path.join(HERE, "results")))
    recipe = select(plan(p, out, fp_sweep=True), twin.runs(p["seeds"])) if args.twin else plan(p, out)
    runs_dir = os.path.join(results, tag)
    if args.plan:
        for st in recipe.stages:
            print(f"{st.name:14s} {kind(st):8s} {st.max_steps:4d} steps  from {st.init_from or '-':10s} "
                  f"teacher {st.teacher or '-':4s}  ~{_fmt(_estimate(st, []))}")
        print(f"{len(recipe.stages)} runs, ~{_fmt(sum(_estimate(st, []) for st in recipe.stages))} "
              "on 2 quiet cores (prior estimates)")
        return 0
    os.chdir(ROOT)                       # the base YAML's data paths are relative to the repository
    if not args.report:
        run_study(select(recipe, args.only.split(",")) if args.only else recipe, runs_dir,
                  args.keep_checkpoints or args.twin)
    # docs/recipe.md shows the committed results only (not a --quick or --results_dir elsewhere)
    docs = None if args.quick or results != os.path.join(HERE, "results") else os.path.join(ROOT, "docs", "recipe.md")
    build = twin.build_report if args.twin else report.build_report
    summary = build(recipe, runs_dir, results, tag, docs, quick=args.quick)
    print(summary)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BitCPMError as err:            # a failed run: its own output says why; re-running resumes
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
