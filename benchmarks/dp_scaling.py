#!/usr/bin/env python3
"""Data-parallel scaling on this machine: tokens/s of the tiny config, 1 process vs N msrun workers.

Same global batch and the same cores either way: 1 process with batch B and
`context.runtime_num_threads = cores`, or N workers (run/msrun_launcher.sh) with batch B/N and
`runtime_num_threads = cores / N` each. Throughput comes from each run's metrics.jsonl (rank 0,
which counts the tokens of all ranks), steady state only: from step `--skip` to the last step.
Launch overhead = wall time from starting the command to the end of the first step (imports,
cluster setup, graph compile, first step).

    python -m benchmarks.dp_scaling [--steps 40] [--workers 2] [--repeats 1]

Writes benchmarks/results/dp_scaling.json.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from bitcpm_ms.testing import REPO as ROOT, free_port, make_mindrecord, write_config

TINY = dict(hidden_size=256, num_layers=4, num_heads=4, n_kv_heads=2, intermediate_size=768, dim_model_base=64,
            vocab_size=8192, seq_length=256)


def _read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _summarise(records, t0, skip):
    steps = [r for r in records if "step" in r]
    first = steps[0]
    a = next(r for r in steps if r["step"] >= skip)
    b = steps[-1]
    tokens = b["tokens_seen"] - a["tokens_seen"]
    dt = b["time"] - a["time"]
    return {"steps": b["step"], "first_step_s": first.get("first_step_s"),
            "time_to_first_step_s": round(first["time"] - t0, 2),
            "steady_steps": b["step"] - a["step"], "steady_tokens": tokens,
            "tokens_per_s": round(tokens / dt, 1), "step_time_s": round(dt / max(b["step"] - a["step"], 1), 4),
            "final_loss": b.get("loss")}


def run_once(workdir, data, workers, batch, steps, threads, skip, tag):
    out = os.path.join(workdir, f"{tag}_out")
    cfg = write_config(os.path.join(workdir, f"{tag}.yaml"), data, out, batch // workers, data_parallel=workers,
                       model=TINY, total_steps=steps, group_size=64)
    extra = ["--max_steps", str(steps), "--context.runtime_num_threads", str(threads),
             "--callbacks.BitCPMMetricsMonitor.log_interval", "1",
             "--callbacks.BitCPMCheckpointMonitor.save_checkpoint_steps", str(10 * steps)]
    env = dict(os.environ, GLOG_v="2", PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(threads))
    load_before = os.getloadavg()[0]
    t0 = time.time()
    if workers == 1:
        cmd = [sys.executable, "run/run_bitcpm.py", "--config", cfg, *extra]
    else:
        order = " ".join(["run/run_bitcpm.py", "--config", cfg, *extra])
        cmd = ["bash", "run/msrun_launcher.sh", order, str(workers), str(workers), "127.0.0.1", str(free_port()),
               "0", os.path.join(workdir, f"{tag}_log"), "True", "300"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{tag}: exit code {proc.returncode}")
    res = _summarise(_read_metrics(out), t0, skip)
    res.update(workers=workers, per_worker_batch=batch // workers, global_batch=batch, threads_per_worker=threads,
               wall_s=round(wall, 1), loadavg_1min_before=round(load_before, 2),
               loadavg_1min_after=round(os.getloadavg()[0], 2))
    return res


def targets(doc) -> list:
    """2 workers not slower per token than 1 process (same global batch, same cores): the paired
    speed-ups (runs alternate) give the range."""
    from benchmarks.machine import target
    paired = doc["paired_speedups"]
    return [target("msrun data parallel, 2 workers / 1 process tokens/s (global batch 8)", doc["speedup"],
                   [min(paired), max(paired)], 1.0, unit="x", method=f"range of {len(paired)} paired runs")]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--skip", type=int, default=5, help="steady state starts at this step")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="global batch (sequences of 256 tokens)")
    p.add_argument("--cores", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=1, help="alternate 1-process and N-worker runs this often")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "dp_scaling.json"))
    args = p.parse_args(argv)
    if args.batch % args.workers or args.cores % args.workers:
        raise SystemExit("--batch and --cores must be divisible by --workers")
    runs = []
    with tempfile.TemporaryDirectory(prefix="dp_scaling_") as work:
        rows = args.batch * (args.steps + 2)
        data = make_mindrecord(os.path.join(work, "data", "train.mindrecord"), rows, TINY["seq_length"],
                               TINY["vocab_size"])
        for r in range(args.repeats):
            for workers in (1, args.workers):
                res = run_once(work, data, workers, args.batch, args.steps, args.cores // workers, args.skip,
                               f"w{workers}_r{r}")
                runs.append(res)
                print(f"{workers} worker(s) x batch {res['per_worker_batch']} x {res['threads_per_worker']} threads: "
                      f"{res['tokens_per_s']:,.0f} tok/s steady ({res['step_time_s']:.3f} s/step), "
                      f"time to first step {res['time_to_first_step_s']:.1f} s (first step incl. compile "
                      f"{res['first_step_s']:.1f} s), wall {res['wall_s']:.0f} s, load {res['loadavg_1min_before']:.1f}"
                      f"->{res['loadavg_1min_after']:.1f}", flush=True)
    best = {w: max(r["tokens_per_s"] for r in runs if r["workers"] == w) for w in (1, args.workers)}
    median = {w: sorted(r["tokens_per_s"] for r in runs if r["workers"] == w)[args.repeats // 2]
              for w in (1, args.workers)}
    result = {
        "what": "tiny config (7.6M params, ternary QAT g=64), CPU, 1 process vs msrun data-parallel workers, "
                "same global batch and same cores",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "args": vars(args), "runs": runs,
        "best_tokens_per_s": {str(k): v for k, v in best.items()},
        "median_tokens_per_s": {str(k): v for k, v in median.items()},
        "speedup": round(best[args.workers] / best[1], 3),
        "paired_speedups": [round(b["tokens_per_s"] / a["tokens_per_s"], 3)
                            for a, b in zip(runs[0::2], runs[1::2])],
        "note": "other jobs may share this machine's CPU (see loadavg per run); runs alternate so both see "
                "similar load. MindFormers' build_context pins each msrun worker to its own core "
                "(mindspore.runtime.set_cpu_affinity), so a worker cannot move away from a core another job uses",
    }
    result["targets"] = targets(result)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(f"best-of-{args.repeats} speedup {args.workers} workers / 1 process: {result['speedup']:.2f}x, paired "
          f"{result['paired_speedups']}  -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
