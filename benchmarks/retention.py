#!/usr/bin/env python3
"""Retention in the report's terms (BitCPM-CANN Table 3): per-task scores of a full-precision model and
its ternary twins, measured with lm-evaluation-harness (the `bitcpm` lm-eval model), their averages
and retention = ternary average / FP average.

    python3 -m benchmarks.retention                       # the recipe study's models, miniature GCIDE task
    python3 -m benchmarks.retention --tasks bitcpm_report --runs_dir DIR    # the report's suite (a cluster)
    python3 -m benchmarks.retention --plan                # which checkpoints it would evaluate

Models (run directories of `python3 -m benchmarks.recipe_study --twin`, checkpoints kept):
  fp              the full-precision checkpoint every ternary run starts from (the report's FP column:
                  MiniCPM4, the init of BitCPM-CANN)
  fp_twin         the FP model trained as many tokens as the ternary runs, at its best LR of the sweep
                  (fp_cont_lr<L>_s<seed>, chosen by held-out bits/byte), a second FP reference
  qat, kd2, kd1   ternary from FP, two-stage distillation, distillation during QAT; seeds 1 and 2

Scores: lm-eval's metric per task (acc for the GCIDE task) with lm-eval's standard error (item
sampling). A variant with several seeds shows the mean over seeds, the mean of their standard errors
and the seed range. The retention's standard error is the delta-method one of a ratio of two
independent means (conservative: FP and ternary models answer the same items, which correlates them).
Writes benchmarks/results/retention.json (with the machine) and retention.md. Each run's scores are kept in
RUN/lm_eval/ with the checkpoint they came from, so a re-run evaluates only what changed.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

from bitcpm_ms.fileio import atomic_json

from benchmarks.machine import write_results

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SEEDS = (1, 2)
VARIANTS = {"qat": "ternary from FP (QAT)", "kd2": "two-stage (QAT, then distillation)",
            "kd1": "one-stage (distillation during QAT)"}
# the metric of each task (lm-eval's key); tasks not listed use acc
METRICS = {"arc_challenge": "acc_norm,none", "arc_easy": "acc_norm,none", "piqa": "acc_norm,none",
           "mmlu_redux_generative": "exact_match,default", "bbh": "exact_match,get-answer",
           "gsm8k": "exact_match,strict-match"}
REPORT_TASKS = ["arc_challenge", "arc_easy", "boolq", "piqa", "winogrande", "cmmlu", "ceval-valid", "mmlu",
                "mmlu_redux_generative", "bbh", "gsm8k"]


def best_fp_twin(runs_dir: str, seeds=SEEDS) -> str:
    """The fp_cont LR of the sweep with the lowest mean held-out bits/byte over seeds."""
    means = {}
    for run in sorted(os.listdir(runs_dir)):
        if run.startswith("fp_cont_lr") and run.endswith(tuple(f"_s{s}" for s in seeds)) \
                and os.path.isfile(os.path.join(runs_dir, run, "eval.json")):
            with open(os.path.join(runs_dir, run, "eval.json"), encoding="utf-8") as f:
                means.setdefault(run.rpartition("_s")[0], []).append(json.load(f)["bits_per_byte"])
    if not means:
        raise SystemExit(f"no fp_cont_lr* runs in {runs_dir}: run python3 -m benchmarks.recipe_study --twin")
    return min(means, key=lambda k: statistics.mean(means[k]))


def model_plan(runs_dir: str, with_twin: bool = True, seeds=SEEDS) -> dict:
    """column -> [run names] (one per seed)."""
    plan = {"fp": ["fp"]}
    if with_twin:
        plan["fp_twin"] = [f"{best_fp_twin(runs_dir, seeds)}_s{s}" for s in seeds]
    plan.update({v: [f"{v}_s{s}" for s in seeds] for v in VARIANTS})
    missing = [r for runs in plan.values() for r in runs if not os.path.isfile(os.path.join(runs_dir, r, "eval.json"))]
    if missing:
        print(f"[retention] not trained (left out): {', '.join(missing)}", flush=True)
    return {col: [r for r in runs if r not in missing] for col, runs in plan.items()
            if any(r not in missing for r in runs)}


def _cache_file(run_dir: str, tasks, args) -> str:
    """Where a run's scores are kept (RUN/lm_eval/...json), so a re-run evaluates only new checkpoints."""
    tag = "-".join(tasks) + f"_L{args.max_length}" + ("_packed" if args.packed else "") + \
        (f"_limit{args.limit}" if args.limit else "")
    return os.path.join(run_dir, "lm_eval", f"{tag}.json")


def evaluate_run(run_dir: str, tasks, args) -> dict:
    """{task: (score, stderr)} of one run's final checkpoint (cached in the run directory)."""
    from bitcpm_ms.training.checkpoint_loading import find_checkpoint
    cache = _cache_file(run_dir, tasks, args)
    ckpt = find_checkpoint(run_dir)
    if os.path.isfile(cache):
        with open(cache, encoding="utf-8") as f:
            kept = json.load(f)
        if kept.get("checkpoint") == ckpt:
            return {k: tuple(v) for k, v in kept["scores"].items()}
    scores = _evaluate(run_dir, tasks, args)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    atomic_json({"checkpoint": ckpt, "scores": scores}, cache)
    return scores


def _evaluate(run_dir: str, tasks, args) -> dict:
    import lm_eval
    from bitcpm_ms.harness import task_manager
    model_args = {"config": os.path.join(run_dir, "config_resolved.json"), "checkpoint": run_dir,
                  "batch_size": args.batch_size, "max_length": args.max_length, "packed": args.packed}
    out = lm_eval.simple_evaluate(model="bitcpm", model_args=model_args, tasks=list(tasks), limit=args.limit,
                                  task_manager=task_manager(args.include_path), log_samples=False)
    scores = {}
    for task in tasks:
        res = out["results"].get(task)
        metric = METRICS.get(task, "acc,none")
        if res is None or metric not in res:
            raise SystemExit(f"{task}: lm-eval gave no {metric} (results: {sorted(out['results'])})")
        name, _, flt = metric.partition(",")
        err = res.get(f"{name}_stderr,{flt}")
        scores[task] = (100 * float(res[metric]), 100 * float(err) if isinstance(err, (int, float)) else None)
    return scores


def combine(per_seed: list, tasks) -> dict:
    """{task: {mean, stderr, range}} and the average over tasks, over a column's seeds."""
    out = {}
    for task in tasks:
        vals = [s[task][0] for s in per_seed]
        errs = [s[task][1] for s in per_seed if s[task][1] is not None]
        out[task] = {"mean": statistics.mean(vals), "stderr": statistics.mean(errs) if errs else None,
                     "seeds": vals}
    avg = [statistics.mean(s[t][0] for t in tasks) for s in per_seed]
    errs = [math.sqrt(sum(out[t]["stderr"] ** 2 for t in tasks)) / len(tasks)
            for _ in per_seed] if all(out[t]["stderr"] is not None for t in tasks) else [None]
    out["average"] = {"mean": statistics.mean(avg), "stderr": errs[0], "seeds": avg}
    return out


def retention(tern: dict, fp: dict) -> dict:
    r = tern["mean"] / fp["mean"]
    se = None
    if tern["stderr"] is not None and fp["stderr"] is not None:
        se = r * math.sqrt((tern["stderr"] / tern["mean"]) ** 2 + (fp["stderr"] / fp["mean"]) ** 2)
    return {"pct": 100 * r, "stderr_pct": None if se is None else 100 * se}


def _cell(c: dict) -> str:
    s = f"{c['mean']:.2f}" + (f" ± {c['stderr']:.2f}" if c["stderr"] is not None else "")
    if len(c["seeds"]) > 1:
        s += f" ({min(c['seeds']):.2f}-{max(c['seeds']):.2f})"
    return s


def markdown(columns: dict, labels: dict, tasks, rets: dict) -> str:
    names = list(columns)
    lines = ["| task | " + " | ".join(labels[n] for n in names) + " |", "|---|" + "---|" * len(names)]
    for task in tasks + ["average"]:
        row = "Average ({} task{})".format(len(tasks), "s" if len(tasks) > 1 else "") if task == "average" else task
        lines.append(f"| {row} | " + " | ".join(_cell(columns[n][task]) for n in names) + " |")
    for ref in ("fp", "fp_twin"):
        if ref in columns:
            lines.append(f"| retention vs {labels[ref].split(' (')[0]} | " + " | ".join(
                "-" if n in ("fp", "fp_twin") else
                f"{rets[ref][n]['pct']:.1f}%" + (f" ± {rets[ref][n]['stderr_pct']:.1f}"
                                                  if rets[ref][n]["stderr_pct"] is not None else "")
                for n in names) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs_dir", default=os.path.join(ROOT, "output", "recipe_study_twin"),
                    help="run directories of recipe_study --twin (checkpoints kept)")
    ap.add_argument("--tasks", default="bitcpm_gcide_define", help="comma-separated; bitcpm_report = the 11 tasks")
    ap.add_argument("--include_path", default=None, help="more lm-eval task directories")
    ap.add_argument("--max_length", type=int, default=64,
                    help="context window of the evaluation (the GCIDE items need at most 59 tokens)")
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--limit", type=int, default=None, help="items per task (a check, not a result)")
    ap.add_argument("--packed", action="store_true", help="ternary models on the packed 2-bit kernels")
    ap.add_argument("--no_twin", action="store_true", help="leave out the LR-swept FP twin column")
    ap.add_argument("--seeds", default="1,2", help="seeds of the study's runs to evaluate")
    ap.add_argument("--plan", action="store_true")
    ap.add_argument("--finished_only", action="store_true",
                    help="evaluate (and cache) the runs that have finished, build no table (while the study runs)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "retention.json"))
    args = ap.parse_args()
    tasks = REPORT_TASKS if args.tasks == "bitcpm_report" else args.tasks.split(",")
    runs_dir = os.path.abspath(args.runs_dir)
    plan = model_plan(runs_dir, not args.no_twin, tuple(int(x) for x in args.seeds.split(",")))
    if args.plan:
        for col, runs in plan.items():
            print(f"{col:8s} " + ", ".join(os.path.join(runs_dir, r) for r in runs))
        return 0
    os.chdir(ROOT)                    # the run configs' data and tokenizer paths are relative to the repository
    per_run, t0 = {}, time.time()
    for col, runs in plan.items():
        for run in runs:
            if args.finished_only and not os.path.isfile(os.path.join(runs_dir, run, "eval.json")):
                continue
            t = time.time()
            packed = args.packed and col not in ("fp", "fp_twin")
            per_run[run] = evaluate_run(os.path.join(runs_dir, run), tasks, argparse.Namespace(**{**vars(args),
                                                                                                  "packed": packed}))
            print(f"[retention] {run}: " + ", ".join(f"{k} {v[0]:.2f} ± {v[1]:.2f}" for k, v in per_run[run].items())
                  + f" ({time.time() - t:.0f} s)", flush=True)
    if args.finished_only:
        return 0
    columns = {col: combine([per_run[r] for r in runs], tasks) for col, runs in plan.items()}
    labels = {"fp": "FP (the init, 819K tokens)"}
    if "fp_twin" in plan:
        labels["fp_twin"] = f"FP twin ({plan['fp_twin'][0].rpartition('_s')[0].replace('fp_cont_', '')}, 1.23M tokens)"
    labels.update({v: f"{VARIANTS[v]} ({'1.23M' if v == 'qat' else '1.33M'} tokens)" for v in VARIANTS if v in plan})
    labels = {k: v + f", {len(plan[k])} seed{'s' if len(plan[k]) > 1 else ''}" if k != "fp" else v for k, v in labels.items()}
    rets = {ref: {v: retention(columns[v]["average"], columns[ref]["average"]) for v in VARIANTS if v in columns}
            for ref in ("fp", "fp_twin") if ref in columns}
    md = markdown(columns, labels, tasks, rets)
    print(md)
    doc = {"tasks": tasks, "plan": plan, "labels": labels, "per_run": per_run, "columns": columns, "retention": rets,
           "settings": {k: v for k, v in vars(args).items() if k not in ("plan", "out")},
           "seconds": round(time.time() - t0, 1), "markdown": md}
    write_results(doc, args.out)
    with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as f:
        f.write(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
