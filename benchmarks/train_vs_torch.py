#!/usr/bin/env python3
"""CPU training speed of our step against PyTorch on the same model, shape and update, measured fairly.

    python3 -m benchmarks.train_vs_torch [--configs tiny,30m] [--precisions fp,qat] [--rounds 10]
        [--steps 3] [--warmup 3] [--threads 2] [--compile] [--torch-python /work/refenv/bin/python]
        [--json benchmarks/results/train_vs_torch.json]

Why this method (issue 25): the earlier comparison ran PyTorch inside the MindSpore process with
neither side's threads set, PyTorch's for-loop AdamW and a Llama without the MiniCPM scalings.
Here, per config x precision:
  * each side is its own process (benchmarks/step_worker.py): ours under this interpreter
    (BitCPMForCausalLM, fused CPU ops, CpuFusedAdamW, our wrapper: clip 1.0, non-finite skip),
    PyTorch under `--torch-python` (benchmarks/torch_train.py: the same MiniCPM math, ternary QAT
    with the same quantizer, AdamW(fused=True), clip_grad_norm_); `--compile` adds torch.compile;
  * threads are set and recorded on both sides: OMP/MKL_NUM_THREADS = T, OPENBLAS_NUM_THREADS = 1,
    torch.set_num_threads(T) and interop 1; MindSpore's CPU kernel pool T and dispatch threads 1
    (`--ms-dispatch`), our kernels' pool T (BITCPM_MS_NUM_THREADS);
  * after the first step and `--warmup` steps each, `--rounds` rounds in which every side runs
    `--steps` steps in turn while the others sleep (order rotated each round);
  * tokens/s from the median step time; the ratio ours / PyTorch with a 95% bootstrap interval over
    rounds (benchmarks.machine.bootstrap_ci) and the verdict on the target ours >= 1.0x PyTorch eager.
The JSON records versions, thread settings, the load before every block and the machine.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import bench_models as B
from benchmarks.machine import bootstrap_ci, machine_info, median_ratio, target, target_line, write_results

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train_vs_torch.json")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFENV = "/work/refenv/bin/python"


def thread_env(threads):
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1",
                BITCPM_MS_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1", GLOG_v="3")


def start_worker(cmd, env):
    from benchmarks.step_worker import read_reply
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    info = read_reply(proc)
    if "error" in info:
        raise RuntimeError(f"{cmd[2]} failed: {info['error']}")
    return proc, info


def ask(proc, n):
    from benchmarks.step_worker import read_reply
    proc.stdin.write(f"run {n}\n")
    proc.stdin.flush()
    return read_reply(proc)


def bench(name, precision, args):
    dims = dict(B.CONFIGS[name], **B.MINICPM)
    env = thread_env(args.threads)
    sides = {"ours": [sys.executable, "-m", "benchmarks.train_vs_torch", "--worker", json.dumps(dims),
                      "--precision", precision, "--threads", str(args.threads), "--warmup", str(args.warmup),
                      "--ms-dispatch", str(args.ms_dispatch)]}
    torch_cmd = [args.torch_python, "-m", "benchmarks.torch_train", "--dims", json.dumps(dims),
                 "--precision", precision, "--threads", str(args.threads), "--warmup", str(args.warmup)]
    sides["torch"] = torch_cmd
    if args.compile:
        sides["torch_compile"] = torch_cmd + ["--compile"]
    torch_env = dict(env, **dict(kv.split("=", 1) for kv in args.torch_env))
    procs, infos = {}, {}
    try:
        for side, cmd in sides.items():          # one at a time: compilations do not overlap
            procs[side], infos[side] = start_worker(cmd, env if side == "ours" else torch_env)
            print(f"  {name} {precision} {side}: first step {infos[side]['first_step_s']:.1f} s", flush=True)
        rounds, cpu_rounds, loads, order = [], [], [], list(procs)
        for r in range(args.rounds):
            block, cpu = {}, {}
            for side in order[r % len(order):] + order[:r % len(order)]:
                time.sleep(args.pause)          # the previous side's spinning threads go idle
                reply = ask(procs[side], args.steps)
                block[side], cpu[side] = reply["times"], reply["cpu_s"]
                loads.append(reply["load_before"][0])
            rounds.append(block)
            cpu_rounds.append(cpu)
            print(f"  {name} {precision} round {r + 1}/{args.rounds}: " + ", ".join(
                f"{s} {statistics.median(t):.2f} s" for s, t in block.items()), flush=True)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.wait(timeout=60)
    tokens = B.tokens_per_step(B.CONFIGS[name])
    row = {"config": name, "precision": precision, "tokens_per_step": tokens, "workers": infos, "rounds": rounds,
           "cpu_rounds": cpu_rounds,
           "load_1min": {"min": min(loads), "median": statistics.median(loads), "max": max(loads)}, "sides": {}}
    for side in procs:
        times = [t for rd in rounds for t in rd[side]]
        q = statistics.quantiles(times, n=4)
        row["sides"][side] = {"tokens_per_s": tokens / statistics.median(times),
                              "tokens_per_s_q1_q3": [tokens / q[2], tokens / q[0]], "steps_timed": len(times),
                              "cpu_s_per_step": statistics.median(t for rd in cpu_rounds for t in rd[side]),
                              "first_step_s": infos[side]["first_step_s"]}
    row["ratios"], row["targets"] = {}, []
    for other in [s for s in procs if s != "ours"]:
        est, ci = bootstrap_ci(rounds, median_ratio(other, "ours"))       # step-time ratio = tokens/s ratio
        cpu_est, cpu_ci = bootstrap_ci(cpu_rounds, median_ratio(other, "ours"))
        row["ratios"][f"ours/{other}"] = {"value": est, "ci95": ci,
                                          "per_round": [statistics.median(rd[other]) / statistics.median(rd["ours"])
                                                        for rd in rounds],
                                          "per_cpu_second": {"value": cpu_est, "ci95": cpu_ci}}
        if other == "torch":
            row["targets"].append(target(f"training tokens/s, {name} {precision}, {args.threads} thread(s) per side: "
                                         "ours / PyTorch eager", est, ci, 1.0,
                                         unit="x", method="median step times, 95% bootstrap over rounds"))
    return row


# ---------------------------------------------------------------- our side (a worker process)
def ours_worker(args):
    """Our training step under the thread settings, served over step_worker's protocol."""
    import mindspore as ms
    from mindspore.device_context.cpu import op_tuning
    from bitcpm_ms.app.console import import_mindformers
    from benchmarks.step_worker import emit, serve
    import_mindformers(log_dir=os.path.join("/tmp", "bitcpm_bench_log"))
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    op_tuning.threads_num(args.threads)
    ms.runtime.dispatch_threads_num(args.ms_dispatch)
    from bitcpm_ms.fused import library
    dims = json.loads(args.worker)
    shape = {k: v for k, v in dims.items() if k in B.CONFIGS["tiny"]}
    info = {"side": "ours", "mindspore": ms.__version__, "ms_kernel_threads": args.threads,   # default 25
            "ms_dispatch_threads": args.ms_dispatch, "our_kernel_threads": library.get_num_threads(),
            "our_kernel_isa": library.isa_name(), "blas": library.blas_problem() or "OpenBLAS (scipy-openblas32)",
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "BITCPM_MS_NUM_THREADS")}}
    try:
        group = 64 if args.precision == "qat" else None
        step = B.ms_runner(B.ms_step(B.ms_network(shape, group, True), "ours", fused_optimizer=True),
                           B.random_batch(shape))
        serve(step, info, args.warmup)
    except Exception as err:
        emit({"error": f"{type(err).__name__}: {err}"})
        raise


def print_table(rows):
    print(f"\n{'config':6s} {'prec':4s} {'side':14s} {'tokens/s (q1-q3)':>26s} {'first step':>10s}")
    for r in rows:
        for side, s in r["sides"].items():
            lo, hi = s["tokens_per_s_q1_q3"]
            print(f"{r['config']:6s} {r['precision']:4s} {side:14s} {s['tokens_per_s']:9,.0f} ({lo:6,.0f}-{hi:6,.0f})"
                  f" {s['first_step_s']:9.1f}s  CPU {s['cpu_s_per_step']:.2f} s/step")
        for k, v in r["ratios"].items():
            c = v["per_cpu_second"]
            print(f"{'':12s}{k}: {v['value']:.2f}x (95% CI {v['ci95'][0]:.2f}-{v['ci95'][1]:.2f}); per CPU second "
                  f"{c['value']:.2f}x ({c['ci95'][0]:.2f}-{c['ci95'][1]:.2f}); load "
                  f"{r['load_1min']['min']:.1f}-{r['load_1min']['max']:.1f}")
        for t in r["targets"]:
            print(" " * 12 + target_line(t))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny,30m")
    p.add_argument("--precisions", default="fp,qat")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--steps", type=int, default=3, help="steps per side per round")
    p.add_argument("--warmup", type=int, default=3, help="steps after the first, untimed")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--ms-dispatch", type=int, default=1, help="MindSpore runtime dispatch threads")
    p.add_argument("--pause", type=float, default=0.5, help="seconds between blocks")
    p.add_argument("--compile", action="store_true", help="also torch.compile (inductor)")
    p.add_argument("--torch-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment of the PyTorch workers (e.g. OMP_WAIT_POLICY=PASSIVE)")
    p.add_argument("--torch-python", default=REFENV if os.path.exists(REFENV) else sys.executable)
    p.add_argument("--json", default=RESULTS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return ours_worker(args)
    if args.rounds * args.steps < 20 or args.warmup < 3:
        p.error("the method needs >= 20 timed steps per side (--rounds x --steps) and --warmup >= 3")
    rows, start = [], machine_info()
    for name in args.configs.split(","):
        if name not in B.CONFIGS:
            p.error(f"unknown config {name!r}; choose from {sorted(B.CONFIGS)}")
        for precision in args.precisions.split(","):
            rows.append(bench(name, precision, args))
    print_table(rows)
    write_results({"method": {k: getattr(args, k) for k in ("rounds", "steps", "warmup", "threads", "ms_dispatch",
                                                             "pause", "compile", "torch_python", "torch_env")},
                   "machine_at_start": start, "results": rows,
                   "targets": [t for r in rows for t in r["targets"]]}, args.json)


if __name__ == "__main__":
    main()
