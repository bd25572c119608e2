#!/usr/bin/env python3
"""Kernel, M = 1: our W1.58A8 and weight-only GEMV against llama.cpp's TQ2_0 matmul on the same ternary
matrix (issue 26's kernel targets), measured fairly.

    python3 -m benchmarks.kernel_compare [--sizes 2048,4096] [--threads 1,2] [--isa avx2,best]
        [--rounds 7] [--reps 100] [--json benchmarks/results/kernel_compare.json]

One C++ process per (size, threads, ISA) (benchmarks/llamacpp_kernel.cpp, compiled against the cached
llama.cpp build of benchmarks/llamacpp.py and dlopen'ing our library) holds both sides: random ternary
weights with one scale per 256 inputs (exact in both formats), K = N, a float32 activation vector.
Ours: bitcpm_ternary_matmul (A8: quantizes the vector per call, like the op; weight-only: float32
activations) with `threads` threads and the ISA cap (avx2: set_max_isa(MAX_ISA_AVX2)). llama.cpp:
ggml_mul_mat of a TQ2_0 tensor by the float32 vector (ggml quantizes it to Q8_K, then the TQ2_0
vec-dot) through ggml_graph_compute on a ggml threadpool of `threads` threads; llama.cpp is built
GGML_NATIVE, so it runs whatever this CPU has whatever our cap. Rounds interleave, and so do the calls
inside a round: blocks of 10 timed calls of ours (A8, weight-only) then 10 of llama.cpp, each block after
two untimed calls (the other side's threads may still be winding down), repeated until each side has
made reps timed calls, each side's median per call over the round kept (a burst of the host's noise
then falls on both sides of a round, not on one); the
table shows median / mean (min-max) over the rounds, and ratios are taken per round
(benchmarks/fair_compare.py). Targets: A8 >= 1.2x llama.cpp, weight-only >= 1.0x.

The last column bounds the weight-only target: in the same rounds the harness times N K / (8 threads)
8-lane FMAs at one core's peak (12 independent register accumulators, no memory access), the least time any
float32-activation AVX2 GEMV of the shape could take with its weights decoded for free and its work split
perfectly over the threads. TQ2_0's time over that is the most such a kernel could reach against TQ2_0.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks.fair_compare import compare, ratio_text, stats

ROOT = Path(__file__).resolve().parents[1]
HARNESS = Path(__file__).with_name("llamacpp_kernel.cpp")
TARGETS = {"a8": 1.2, "w": 1.0}


def build_harness() -> Path:
    from benchmarks import llamacpp
    out = llamacpp.build(log=lambda m: None)
    src = llamacpp.source_dir()
    key = hashlib.sha256(HARNESS.read_bytes()).hexdigest()[:12]
    exe = out / "bin" / f"bitcpm-kernel-bench-{key}"
    if not exe.exists():
        tmp = exe.with_name(exe.name + f".tmp-{os.getpid()}")
        subprocess.run([os.environ.get("CXX", "g++"), "-O2", "-std=c++17", str(HARNESS), "-o", str(tmp),
                        "-I", str(src / "ggml" / "include"), "-L", str(out / "bin"), "-lggml", "-lggml-base",
                        "-lggml-cpu", "-ldl", f"-Wl,-rpath,{out / 'bin'}"], check=True)
        os.replace(tmp, exe)
    return exe


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2048,4096")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--isa", default="avx2,best")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "kernel_compare.json"))
    args = ap.parse_args(argv)
    from benchmarks import llamacpp
    from benchmarks.machine import start_info, write_results
    from bitcpm_ms.kernels import library_path
    start = start_info()
    exe, lib = build_harness(), library_path()
    runs, lines = {}, ["seconds per call: median / mean (min-max over rounds); ratio = llama.cpp time / ours", "",
                       "| K = N | threads | our ISA | ours A8 (us) | ours weight-only (us) | llama.cpp TQ2_0 (us) "
                       "| A8 / TQ2_0 | weight-only / TQ2_0 | float32 FMA bound / TQ2_0 |",
                       "|---|---|---|---|---|---|---|---|---|"]
    us = lambda s: f"{1e6 * s['median']:.1f} / {1e6 * s['mean']:.1f} ({1e6 * s['min']:.1f}-{1e6 * s['max']:.1f})"
    for size in [int(s) for s in args.sizes.split(",")]:
        for t in [int(x) for x in args.threads.split(",")]:
            for isa in args.isa.split(","):
                cmd = [str(exe), str(lib), str(size), str(size), str(size // 256), str(t), "1" if isa == "avx2" else "0",
                       str(args.rounds), str(args.reps)]
                cpus = set(sorted(os.sched_getaffinity(0))[:t])
                r = subprocess.run(cmd, capture_output=True, text=True, check=True,
                                   preexec_fn=lambda: os.sched_setaffinity(0, cpus))
                d = json.loads(r.stdout.strip().splitlines()[-1])
                run = {"ours_a8": stats(d["ours_a8"]), "ours_w": stats(d["ours_w"]), "tq2_0": stats(d["tq2_0"]),
                       "rounds": d,
                       "a8_vs_tq2_0": compare(d["ours_a8"], d["tq2_0"], TARGETS["a8"], higher_is_better=False),
                       "w_vs_tq2_0": compare(d["ours_w"], d["tq2_0"], TARGETS["w"], higher_is_better=False),
                       "fma_bound": stats(d["fma_bound"]),
                       "fma_bound_vs_tq2_0": compare(d["fma_bound"], d["tq2_0"], higher_is_better=False)}
                runs[f"{size}/{t}/{isa}"] = run
                lines.append(f"| {size} | {t} | {isa} | {us(run['ours_a8'])} | {us(run['ours_w'])} | {us(run['tq2_0'])} "
                             f"| {ratio_text(run['a8_vs_tq2_0'])} | {ratio_text(run['w_vs_tq2_0'])} "
                             f"| {ratio_text(run['fma_bound_vs_tq2_0'])} |")
                print(lines[-1], file=sys.stderr, flush=True)
    doc = {"rounds": args.rounds, "reps": args.reps, "group_size": 256, "runs": runs, "targets": TARGETS,
           "llamacpp": {"llama_cpp_python": llamacpp.VERSION, "build": "GGML_NATIVE (every SIMD flag of this CPU)"}}
    write_results(doc, args.json, start)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
