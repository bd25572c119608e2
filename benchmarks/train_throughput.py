#!/usr/bin/env python3
"""Training throughput on CPU: our training step against PyTorch eager on the same shapes, and the
Trainer path against a raw graph-mode loop over the same network. Prints tables, writes JSON.

    python -m benchmarks.train_throughput [--configs tiny,30m] [--precisions fp,qat] [--rounds 5]
        [--steps 3] [--threads 2] [--no-torch] [--no-trainer] [--json PATH]

Part 1 (per config x precision), variants built once, then `--rounds` rounds in which each runs
`--steps` steps in turn (interleaved, so machine noise hits all alike); medians and quartiles of
the per-step times:
  ours      BitCPMForCausalLM (MiniCPM scalings, ternary QAT g=64 for "qat") with the fused CPU
            ops and CpuFusedAdamW, under our train-step wrapper (global-norm clipping), fixed batch
  unfused   the same with MindSpore's op chains and MindFormers' AdamW (the model before fusion)
  torch     PyTorch eager, HF LlamaForCausalLM of the same shape (+ absmean ternary BitLinear
            g=64 with STE for "qat"), AdamW, clip_grad_norm_ 1.0 (skipped if PyTorch is absent)
Part 2 (tiny YAML, as shipped, in-process): MindFormers' Trainer (dataset pipeline, callbacks,
our wrapper) on synthetic data of the same shape; every few Trainer steps a probe callback runs
a raw nn.TrainOneStepCell loop (fixed batch, no clipping) and our wrapper's loop over a copy of
the same network, so all three are interleaved. First-step (compile) times are reported.
"""
import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time

from benchmarks import bench_models as B

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train_throughput.json")


def summarize(times, tokens):
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    med = statistics.median(times)
    return {"median_step_s": med, "tokens_per_s": tokens / med, "tokens_per_s_q1_q3": [tokens / q[2], tokens / q[0]],
            "steps_timed": len(times)}


def timed(run):
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


# ---------------------------------------------------------------- part 1
def bench_shape(name, precision, args, torch_problem):
    dims = B.CONFIGS[name]
    group = 64 if precision == "qat" else None
    batch = B.random_batch(dims)
    runners, compile_s = {}, {}
    for variant, fused in (("ours", True), ("unfused", False)):
        run = B.ms_runner(B.ms_step(B.ms_network(dims, group, fused), "ours", fused_optimizer=fused), batch)
        compile_s[variant] = timed(run)
        runners[variant] = run
    if not torch_problem:
        run = B.torch_runner(dims, batch, group, threads=args.threads)
        compile_s["torch"] = timed(run)
        runners["torch"] = run
    for run in runners.values():                       # one warm step each
        run()
    times = {v: [] for v in runners}
    for _ in range(args.rounds):
        for v, run in runners.items():
            times[v] += [timed(run) for _ in range(args.steps)]
    tokens = B.tokens_per_step(dims)
    row = {"config": name, "precision": precision, "tokens_per_step": tokens,
           "first_step_s": compile_s, "variants": {v: summarize(t, tokens) for v, t in times.items()}}
    tps = {v: r["tokens_per_s"] for v, r in row["variants"].items()}
    if "torch" in tps:
        row["ours_vs_torch"] = tps["ours"] / tps["torch"]
    row["fused_speedup"] = tps["ours"] / tps["unfused"]
    return row


# ---------------------------------------------------------------- part 2
def bench_trainer(args, workdir):
    """The tiny YAML's Trainer path vs raw loops over the same network, interleaved in one run."""
    import mindspore as ms
    from mindspore.train.callback import Callback
    from mindformers.core.context import build_context
    from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

    from bitcpm_ms import training as _training  # noqa: F401  (registers wrapper and callbacks)
    from bitcpm_ms.app.config import load_config
    from bitcpm_ms.app.train import train
    from bitcpm_ms.testing import TINY_YAML, make_mindrecord

    period, warm = args.trainer_period, 3
    total = warm + args.rounds * period
    dims = B.CONFIGS["tiny"]
    data_dir = make_mindrecord(os.path.join(workdir, "data", "train.mindrecord"), dims["batch_size"] * (total + 2),
                               dims["seq_length"], dims["vocab_size"])
    overrides = {"output_dir": os.path.join(workdir, "out"), "eval_after_train": False,
                 "train_dataset.data_loader.dataset_dir": data_dir, "runner_config.stop_step": total}
    if args.trainer_precision == "fp":
        overrides["quant.enabled"] = False
    config = load_config(TINY_YAML, overrides)
    config.pop("data", None)
    config.output_dir = os.path.abspath(config.output_dir)
    os.makedirs(config.output_dir, exist_ok=True)
    build_context(config)
    model_cfg = {k: config.model.model_config[k] for k in B.CONFIGS["tiny"]}
    group = 64 if args.trainer_precision == "qat" else None
    fused = bool(config.model.model_config.get("cpu_fused_ops", False))
    fused_opt = config.optimizer.type == "CpuFusedAdamW"
    batch = B.random_batch(dims)
    loops = {k: B.ms_runner(B.ms_step(B.ms_network(model_cfg, group, fused), k, fused_optimizer=fused_opt), batch)
             for k in ("raw", "ours")}
    loops["ours_loop"] = loops.pop("ours")
    compile_s = {k: timed(run) for k, run in loops.items()}
    record = {"trainer": [], "raw": [], "ours_loop": [], "first_step_s": None}

    @MindFormerRegister.register(MindFormerModuleType.CALLBACK)
    class ThroughputProbe(Callback):
        """Times Trainer steps end to end and runs the raw loops in between (excluded)."""

        def __init__(self, **kwargs):
            super().__init__()
            self.t_prev, self.n = None, 0

        def on_train_begin(self, run_context):
            self.t_prev = time.perf_counter()

        def on_train_step_end(self, run_context):
            dt = time.perf_counter() - self.t_prev
            self.n += 1
            if self.n == 1:
                record["first_step_s"] = dt
            elif self.n > warm:
                record["trainer"].append(dt)
            if self.n >= warm and (self.n - warm) % period == 0:
                for k, run in loops.items():
                    record[k] += [timed(run) for _ in range(args.steps)]
            self.t_prev = time.perf_counter()

    config.callbacks.append({"type": "ThroughputProbe"})
    train(config)
    tokens = B.tokens_per_step(dims)
    res = {"config": "tiny YAML", "precision": args.trainer_precision, "cpu_fused_ops": fused,
           "first_step_s": {"trainer": record["first_step_s"], **compile_s}}
    res["variants"] = {k: summarize(record[k], tokens) for k in ("trainer", "raw", "ours_loop") if record[k]}
    v = res["variants"]
    res["trainer_vs_raw"] = v["trainer"]["tokens_per_s"] / v["raw"]["tokens_per_s"]
    res["ours_loop_vs_raw"] = v["ours_loop"]["tokens_per_s"] / v["raw"]["tokens_per_s"]
    del loops
    gc.collect()
    return res


def print_tables(rows, trainer):
    print(f"\n{'config':7s} {'prec':4s} {'variant':8s} {'tokens/s (median, q1-q3)':>28s} {'first step':>11s}")
    for r in rows:
        for v, s in r["variants"].items():
            lo, hi = s["tokens_per_s_q1_q3"]
            print(f"{r['config']:7s} {r['precision']:4s} {v:8s} {s['tokens_per_s']:10,.0f} ({lo:7,.0f}-{hi:7,.0f})"
                  f" {r['first_step_s'][v]:10.1f}s")
        extra = f"ours/torch {r['ours_vs_torch']:.2f}x, " if "ours_vs_torch" in r else ""
        print(f"{'':12s} -> {extra}fused/unfused {r['fused_speedup']:.2f}x")
    qat = {r["config"]: r for r in rows if r["precision"] == "qat"}
    for r in rows:
        if r["precision"] == "fp" and r["config"] in qat:
            fp_t, q_t = r["variants"]["ours"]["median_step_s"], qat[r["config"]]["variants"]["ours"]["median_step_s"]
            print(f"QAT overhead ({r['config']}, ours): {100 * (q_t / fp_t - 1):+.1f}%")
    if trainer:
        print(f"\nTrainer path ({trainer['config']}, {trainer['precision']}, cpu_fused_ops={trainer['cpu_fused_ops']}):")
        for v, s in trainer["variants"].items():
            lo, hi = s["tokens_per_s_q1_q3"]
            print(f"  {v:10s} {s['tokens_per_s']:10,.0f} tok/s ({lo:,.0f}-{hi:,.0f}), first step "
                  f"{trainer['first_step_s'][v]:.1f}s")
        print(f"  trainer / raw loop {trainer['trainer_vs_raw']:.3f}x; our wrapper's loop / raw loop "
              f"{trainer['ours_loop_vs_raw']:.3f}x")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny,30m")
    p.add_argument("--precisions", default="fp,qat")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    p.add_argument("--threads", type=int, default=None, help="PyTorch threads (default: its own)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--no-trainer", action="store_true")
    p.add_argument("--trainer-precision", default="qat", choices=("qat", "fp"))
    p.add_argument("--trainer-period", type=int, default=4, help="Trainer steps between raw-loop probes")
    p.add_argument("--json", default=RESULTS)
    args = p.parse_args()
    from bitcpm_ms.app.console import import_mindformers
    import_mindformers(log_dir=os.path.join(tempfile.gettempdir(), "bitcpm_bench_log"))
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    torch_problem = "disabled (--no-torch)" if args.no_torch else B.torch_available()
    if torch_problem:
        print(torch_problem, flush=True)
    rows = []
    for name in args.configs.split(","):
        if name not in B.CONFIGS:
            p.error(f"unknown config {name!r}; choose from {sorted(B.CONFIGS)}")
        for precision in args.precisions.split(","):
            rows.append(bench_shape(name, precision, args, torch_problem))
            print(json.dumps(rows[-1]), flush=True)
            gc.collect()
    trainer = None
    if not args.no_trainer:
        with tempfile.TemporaryDirectory() as workdir:
            trainer = bench_trainer(args, workdir)
    print_tables(rows, trainer)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump({"device": "CPU", "cores": os.cpu_count(), "load_avg": os.getloadavg(), "rounds": args.rounds,
                   "steps_per_round": args.steps, "torch": torch_problem or "yes", "results": rows,
                   "trainer": trainer}, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
