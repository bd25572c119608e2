#!/usr/bin/env python3
"""Training throughput on CPU: the fused CPU ops against MindSpore's op chains on the same shapes, and
the Trainer path against a raw graph-mode loop over the same network. Prints tables, writes JSON.

    python -m benchmarks.train_throughput [--configs tiny,30m] [--precisions fp,qat] [--rounds 8]
        [--steps 3] [--parts fused,trainer] [--json PATH] [--trainer-json PATH]

(Our step against PyTorch is benchmarks/train_vs_torch.py: separate processes, threads set on both sides.)
Part "fused" (per config x precision), variants built once, then `--rounds` rounds in which each
runs `--steps` steps in turn (interleaved, so machine noise hits all alike); medians and quartiles
of the per-step times, and the speed-up with a 95% bootstrap interval over rounds:
  ours      BitCPMForCausalLM (MiniCPM scalings, ternary QAT g=64 for "qat") with the fused CPU
            ops and CpuFusedAdamW, under our train-step wrapper (global-norm clipping), fixed batch
  unfused   the same with MindSpore's op chains and MindFormers' AdamW (the model before fusion)
Part "trainer" (tiny YAML, as shipped, in-process): MindFormers' Trainer (dataset pipeline,
callbacks, our wrapper) on synthetic data of the same shape; every `--trainer-period` Trainer steps
a probe callback runs a raw nn.TrainOneStepCell loop (fixed batch, no clipping), our wrapper's
loop and our wrapper's loop without the clip fold (gradients scaled in a separate pass) over copies
of the same network (one round = those Trainer steps + the probe's blocks), so all are interleaved. Target: the Trainer path >= 0.95x the raw loop, judged on the 95% interval.
First-step (compile) times are reported.
"""
import argparse
import gc
import json
import os
import statistics
import tempfile
import time

from benchmarks import bench_models as B
from benchmarks.machine import bootstrap_ci, median_ratio, target, target_line, write_results

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train_throughput.json")
TRAINER_RESULTS = os.path.join(os.path.dirname(RESULTS), "train_trainer.json")


def summarize(times, tokens):
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    med = statistics.median(times)
    return {"median_step_s": med, "tokens_per_s": tokens / med, "tokens_per_s_q1_q3": [tokens / q[2], tokens / q[0]],
            "steps_timed": len(times)}


def timed(run):
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def timed_cpu(run):
    """(wall s, CPU s of the process): on a machine shared with other jobs the CPU time of a step
    moves far less with the load than its wall time, so it can resolve smaller differences."""
    c0, t0 = time.process_time(), time.perf_counter()
    run()
    return time.perf_counter() - t0, time.process_time() - c0


# ---------------------------------------------------------------- part 1
def bench_shape(name, precision, args):
    dims = B.CONFIGS[name]
    group = 64 if precision == "qat" else None
    batch = B.random_batch(dims)
    runners, compile_s = {}, {}
    for variant, fused in (("ours", True), ("unfused", False)):
        run = B.ms_runner(B.ms_step(B.ms_network(dims, group, fused), "ours", fused_optimizer=fused), batch)
        compile_s[variant] = timed(run)
        runners[variant] = run
    for run in runners.values():                       # warm-up
        for _ in range(3):
            run()
    rounds = []
    for _ in range(args.rounds):
        rounds.append({v: [timed(run) for _ in range(args.steps)] for v, run in runners.items()})
    tokens = B.tokens_per_step(dims)
    row = {"config": name, "precision": precision, "tokens_per_step": tokens, "first_step_s": compile_s,
           "variants": {v: summarize([t for r in rounds for t in r[v]], tokens) for v in runners}, "rounds": rounds,
           "load_1min_end": os.getloadavg()[0]}
    est, ci = bootstrap_ci(rounds, median_ratio("unfused", "ours"))
    row["fused_speedup"] = {"value": est, "ci95": ci}
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

    period, warm = args.trainer_period, 4
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
    loops = {k: B.ms_runner(B.ms_step(B.ms_network(model_cfg, group, fused), w, fused_optimizer=fused_opt,
                                      fold_clip=fold), batch)
             for k, w, fold in (("raw", "raw", True), ("ours_loop", "ours", True), ("unfolded_loop", "ours", False))}
    compile_s = {k: timed(run) for k, run in loops.items()}
    record = {"trainer": [], "raw": [], "ours_loop": [], "unfolded_loop": [], "first_step_s": None, "rounds": [],
              "cpu_rounds": [], "loads": [], "cpu": {"trainer": []}}

    @MindFormerRegister.register(MindFormerModuleType.CALLBACK)
    class ThroughputProbe(Callback):
        """Times Trainer steps end to end and runs the raw loops in between (excluded)."""

        def __init__(self, **kwargs):
            super().__init__()
            self.t_prev, self.c_prev, self.n = None, None, 0

        def on_train_begin(self, run_context):
            self.t_prev, self.c_prev = time.perf_counter(), time.process_time()

        def on_train_step_end(self, run_context):
            dt, dc = time.perf_counter() - self.t_prev, time.process_time() - self.c_prev
            self.n += 1
            if self.n == 1:
                record["first_step_s"] = dt
            elif self.n > warm:
                record["trainer"].append(dt)
                record["cpu"]["trainer"].append(dc)
            if self.n >= warm and (self.n - warm) % period == 0:
                block = {"trainer": record["trainer"][-period:] if self.n > warm else []}
                cpu = {"trainer": record["cpu"]["trainer"][-period:] if self.n > warm else []}
                for k, run in loops.items():
                    out = [timed_cpu(run) for _ in range(args.steps)]
                    block[k], cpu[k] = [w for w, _ in out], [c for _, c in out]
                    record[k] += block[k]
                if block["trainer"]:
                    record["rounds"].append(block)
                    record["cpu_rounds"].append(cpu)
                record["loads"].append(os.getloadavg()[0])
            self.t_prev, self.c_prev = time.perf_counter(), time.process_time()

    config.callbacks.append({"type": "ThroughputProbe"})
    train(config)
    tokens = B.tokens_per_step(dims)
    res = {"config": "tiny YAML", "precision": args.trainer_precision, "cpu_fused_ops": fused,
           "first_step_s": {"trainer": record["first_step_s"], **compile_s}}
    res["variants"] = {k: summarize(record[k], tokens) for k in ("trainer", "raw", "ours_loop", "unfolded_loop")
                       if record[k]}
    res["rounds"], res["load_1min"] = record["rounds"], [min(record["loads"]), max(record["loads"])]
    res["cpu_rounds"], res["cpu_ratios"] = record["cpu_rounds"], {}
    for key, num, den in (("trainer_vs_raw", "trainer", "raw"), ("ours_loop_vs_raw", "ours_loop", "raw"),
                          ("trainer_vs_ours_loop", "trainer", "ours_loop"),
                          ("unfolded_loop_vs_raw", "unfolded_loop", "raw"),
                          ("ours_loop_vs_unfolded_loop", "ours_loop", "unfolded_loop")):
        est, ci = bootstrap_ci(record["rounds"], median_ratio(den, num))       # step times: den / num
        res[key] = {"value": est, "ci95": ci}
        est, ci = bootstrap_ci(record["cpu_rounds"], median_ratio(den, num))   # CPU seconds per step
        res["cpu_ratios"][key] = {"value": est, "ci95": ci}
    res["targets"] = [target("Trainer path tokens/s / raw loop without clipping (tiny YAML)", res["trainer_vs_raw"]["value"],
                             res["trainer_vs_raw"]["ci95"], 0.95, unit="x",
                             method="median step times, 95% bootstrap over interleaved rounds"),
                      target("Trainer path / raw loop without clipping (tiny YAML), CPU seconds per step",
                             res["cpu_ratios"]["trainer_vs_raw"]["value"], res["cpu_ratios"]["trainer_vs_raw"]["ci95"],
                             0.95, unit="x", method="median CPU s per step (process), 95% bootstrap over rounds")]
    del loops
    gc.collect()
    return res


def _ci(r):
    return f"{r['value']:.3f}x (95% CI {r['ci95'][0]:.3f}-{r['ci95'][1]:.3f})"


def print_tables(rows, trainer):
    if rows:
        print(f"\n{'config':7s} {'prec':4s} {'variant':8s} {'tokens/s (median, q1-q3)':>28s} {'first step':>11s}")
    for r in rows:
        for v, s in r["variants"].items():
            lo, hi = s["tokens_per_s_q1_q3"]
            print(f"{r['config']:7s} {r['precision']:4s} {v:8s} {s['tokens_per_s']:10,.0f} ({lo:7,.0f}-{hi:7,.0f})"
                  f" {r['first_step_s'][v]:10.1f}s")
        print(f"{'':12s} -> fused/unfused {_ci(r['fused_speedup'])}")
    if trainer:
        print(f"\nTrainer path ({trainer['config']}, {trainer['precision']}, cpu_fused_ops={trainer['cpu_fused_ops']}, "
              f"load {trainer['load_1min'][0]:.1f}-{trainer['load_1min'][1]:.1f}):")
        for v, s in trainer["variants"].items():
            lo, hi = s["tokens_per_s_q1_q3"]
            print(f"  {v:10s} {s['tokens_per_s']:10,.0f} tok/s ({lo:,.0f}-{hi:,.0f}), {s['steps_timed']} steps, "
                  f"first step {trainer['first_step_s'][v]:.1f}s")
        print(f"  trainer / raw loop {_ci(trainer['trainer_vs_raw'])}; our wrapper's loop / raw loop "
              f"{_ci(trainer['ours_loop_vs_raw'])}; trainer / our wrapper's loop {_ci(trainer['trainer_vs_ours_loop'])}")
        print(f"  clip folded into CpuFusedAdamW: wrapper loop folded / unfolded "
              f"{_ci(trainer['ours_loop_vs_unfolded_loop'])}; unfolded / raw {_ci(trainer['unfolded_loop_vs_raw'])}")
        c = trainer["cpu_ratios"]
        print(f"  per CPU second: trainer / raw {_ci(c['trainer_vs_raw'])}; wrapper loop / raw {_ci(c['ours_loop_vs_raw'])}"
              f"; folded / unfolded {_ci(c['ours_loop_vs_unfolded_loop'])}; unfolded / raw {_ci(c['unfolded_loop_vs_raw'])}")
        for t in trainer["targets"]:
            print("  " + target_line(t))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny,30m")
    p.add_argument("--precisions", default="fp,qat")
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps", type=int, default=3, help="steps per variant per round")
    p.add_argument("--parts", default="fused,trainer", help="fused (ours vs op chains), trainer, or both")
    p.add_argument("--trainer-precision", default="qat", choices=("qat", "fp"))
    p.add_argument("--trainer-period", type=int, default=4, help="Trainer steps between raw-loop probes")
    p.add_argument("--json", default=RESULTS)
    p.add_argument("--trainer-json", default=TRAINER_RESULTS)
    args = p.parse_args()
    parts = set(args.parts.split(","))
    if parts - {"fused", "trainer"}:
        p.error(f"unknown part(s) {sorted(parts - {'fused', 'trainer'})}")
    from bitcpm_ms.app.console import import_mindformers
    import_mindformers(log_dir=os.path.join(tempfile.gettempdir(), "bitcpm_bench_log"))
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rows = []
    for name in (args.configs.split(",") if "fused" in parts else []):
        if name not in B.CONFIGS:
            p.error(f"unknown config {name!r}; choose from {sorted(B.CONFIGS)}")
        for precision in args.precisions.split(","):
            rows.append(bench_shape(name, precision, args))
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "rounds"}), flush=True)
            gc.collect()
    trainer = None
    if "trainer" in parts:
        with tempfile.TemporaryDirectory() as workdir:
            trainer = bench_trainer(args, workdir)
    print_tables(rows, trainer)
    method = {"rounds": args.rounds, "steps_per_round": args.steps}
    if rows:
        write_results({"method": method, "results": rows}, args.json)
    if trainer:
        write_results({"method": dict(method, trainer_period=args.trainer_period), "trainer": trainer,
                       "targets": trainer["targets"]}, args.trainer_json)


if __name__ == "__main__":
    main()
