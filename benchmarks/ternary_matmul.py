"""Benchmark: packed ternary matmul (ctypes and MindSpore AOT op) vs MindSpore float32 MatMul.

    python3 -m benchmarks.ternary_matmul [--json PATH] [--reps R] [--threads 1 2]

1. Validates the kernels against the numpy reference (both modes, both code paths).
2. For M in {1, 128}, K = N in {2048, 4096}, threads in {1, 2} (one subprocess per thread count,
   because MindSpore's CPU thread pool size, `runtime_num_threads`, is fixed at start-up):
   our kernel weight-only (W) and W1.58A8 (A8) via ctypes and via the MindSpore AOT op in
   GRAPH_MODE, and MindSpore `ops.MatMul(transpose_b=True)` in GRAPH_MODE on the dequantized
   float32 weight. Reports best-of-R wall time, GFLOP/s-equivalent (2*M*N*K/t) and packed-weight
   GB/s (packed bytes/t; for fp32 MatMul the fp32 weight bytes/t).
3. Training forward (M=512, K=N=2048): fake-quant (WeightFakeQuant Cell) + fp32 MatMul vs a
   "fused" forward = C++ quantize+pack of the latent weight + ternary matmul.
Writes JSON (default benchmarks/results/ternary_matmul.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

GROUP = 128


def best_time(fn, reps, min_time=0.2):
    fn()  # warm-up (compile / page-in)
    best = float("inf")
    t_end = time.perf_counter() + min_time
    n = 0
    while n < reps or (time.perf_counter() < t_end and n < 50 * reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
        n += 1
    return best


def targets(doc) -> list:
    """The stated targets on one thread, W1.58A8 and weight-only (ctypes), K = N = 4096 and 2048:
    decode (M = 1) >= 8x MindSpore's fp32 MatMul, prefill (M = 128) >= 1x. Timings are best-of-R,
    which has no interval: the verdict is on the point value (method says so)."""
    from benchmarks.machine import target
    out = []
    for r in doc["rows"]:
        if r["threads"] != 1 or not r["impl"].endswith("(ctypes)"):
            continue
        bar = 8.0 if r["M"] == 1 else 1.0
        what = "decode (M = 1)" if r["M"] == 1 else f"prefill (M = {r['M']})"
        x = r["speedup_vs_ms_fp32"]
        out.append(target(f"packed ternary matmul {r['impl'].split(' (')[0]}, {what}, K = N = {r['K']}, 1 thread, "
                          "vs MindSpore fp32 MatMul", x, [x, x], bar, unit="x",
                          method="best of R timings; no interval"))
    return out


def validate():
    from bitcpm_ms.kernels import (MAX_ISA_AVX2, MAX_ISA_BEST, has_avx2, has_avx512_vnni, isa_path, pack_ternary,
                                   ternary_matmul_numpy, ternary_matmul_reference)
    paths = {"portable": (True, MAX_ISA_BEST)}
    if has_avx2():
        paths["AVX2"] = (False, MAX_ISA_AVX2)
    if has_avx512_vnni():
        paths["AVX-512/VNNI"] = (False, MAX_ISA_BEST)
    rng = np.random.default_rng(0)
    for M, K, N, g in [(1, 4096, 64, 128), (17, 2048, 33, 64), (3, 96, 5, 32)]:
        codes = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
        p = pack_ternary(codes, rng.uniform(0.01, 0.1, (N, K // g)).astype(np.float32), g)
        x = rng.standard_normal((M, K)).astype(np.float32)
        for act_bits in (None, 8):
            ref = ternary_matmul_reference(x, p, act_bits)
            for name, (portable, isa) in paths.items():
                with isa_path(isa):
                    y = ternary_matmul_numpy(x, p, act_bits, force_portable=portable)
                err = np.abs(y - ref).max() / max(1e-6, np.abs(ref).max())
                if err > 1e-5:
                    raise SystemExit(f"validation failed M={M} K={K} N={N} g={g} act_bits={act_bits} "
                                     f"path={name}: rel err {err}")
    print(f"validation against the numpy reference: OK (both modes; paths: {', '.join(paths)})")


def worker(threads: int, reps: int, shapes):
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops

    from bitcpm_ms.kernels import (get_ms_op, pack_ternary, quantize_pack_numpy, set_num_threads,
                                   ternary_matmul_numpy)
    from bitcpm_ms.quant.cells import WeightFakeQuant

    set_num_threads(threads)
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", runtime_num_threads=threads)

    class MM(nn.Cell):
        def __init__(self, w):
            super().__init__()
            self.w = Parameter(Tensor(w), name="w", requires_grad=False)
            self.mm = ops.MatMul(transpose_b=True)

        def construct(self, x):
            return self.mm(x, self.w)

    class TOp(nn.Cell):
        def __init__(self, p, act_bits):
            super().__init__()
            self.op = get_ms_op(act_bits)
            self.w = Parameter(Tensor(p.packed), name="wp", requires_grad=False)
            self.s = Parameter(Tensor(p.scales), name="ws", requires_grad=False)

        def construct(self, x):
            return self.op(x, self.w, self.s)

    class FQ(nn.Cell):
        def __init__(self, w, matmul=True):
            super().__init__()
            self.w = Parameter(Tensor(w), name="lw")
            self.q = WeightFakeQuant("ternary", GROUP, 1e-5)
            self.mm = ops.MatMul(transpose_b=True)
            self.matmul = matmul

        def construct(self, x):
            wq = self.q(self.w)
            if self.matmul:
                return self.mm(x, wq)
            return wq

    rng = np.random.default_rng(1)
    rows = []
    for K, M in shapes:
        N = K
        codes = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
        p = pack_ternary(codes, rng.uniform(0.01, 0.1, (N, K // GROUP)).astype(np.float32), GROUP)
        wdq = p.dequantize()
        x = rng.standard_normal((M, K)).astype(np.float32)
        xt = Tensor(x)
        r = max(3, reps if M == 1 else reps // 4)
        flops = 2.0 * M * N * K
        cases = {
            "ours W (ctypes)": (lambda: ternary_matmul_numpy(x, p, None), p.packed.nbytes),
            "ours A8 (ctypes)": (lambda: ternary_matmul_numpy(x, p, 8), p.packed.nbytes),
        }
        tw, ta = TOp(p, None), TOp(p, 8)
        mm = MM(wdq)
        cases["ours W (MS AOT op)"] = (lambda: tw(xt).asnumpy(), p.packed.nbytes)
        cases["ours A8 (MS AOT op)"] = (lambda: ta(xt).asnumpy(), p.packed.nbytes)
        cases["MindSpore fp32 MatMul"] = (lambda: mm(xt).asnumpy(), wdq.nbytes)
        # sanity: the MS paths agree
        np.testing.assert_allclose(tw(xt).asnumpy(), mm(xt).asnumpy(), rtol=1e-4, atol=1e-3)
        for name, (fn, nbytes) in cases.items():
            t = best_time(fn, r)
            rows.append({"threads": threads, "M": M, "K": K, "N": N, "impl": name, "ms": t * 1e3,
                         "gflops": flops / t / 1e9, "weight_GBps": nbytes / t / 1e9})
            print(f"  threads={threads} M={M:4d} K=N={K} {name:24s} {t * 1e3:9.3f} ms", flush=True)
        del mm, tw, ta

    # training forward: fake-quant + MatMul vs fused quantize+pack + ternary kernel
    train = []
    K = N = 2048
    M = 512
    w = (rng.standard_normal((N, K)) * 0.02).astype(np.float32)
    x = rng.standard_normal((M, K)).astype(np.float32)
    xt = Tensor(x)
    fq, fq_only, mm = FQ(w), FQ(w, matmul=False), MM(w)
    dummy = Tensor(x[:1])
    cases = {
        "fake-quant + fp32 MatMul (MS graph)": lambda: fq(xt).asnumpy(),
        "  of which fake-quant alone": lambda: fq_only(dummy).asnumpy(),
        "  of which fp32 MatMul alone": lambda: mm(xt).asnumpy(),
        "fused: C++ quantize+pack + ternary W kernel": lambda: ternary_matmul_numpy(x, quantize_pack_numpy(w, GROUP), None),
        "  of which quantize+pack": lambda: quantize_pack_numpy(w, GROUP),
        "  of which ternary W kernel": None,
    }
    pk = quantize_pack_numpy(w, GROUP)
    cases["  of which ternary W kernel"] = lambda: ternary_matmul_numpy(x, pk, None)
    for name, fn in cases.items():
        t = best_time(fn, 3)
        train.append({"threads": threads, "M": M, "K": K, "N": N, "impl": name, "ms": t * 1e3})
        print(f"  threads={threads} train-fwd M={M} K=N={K} {name:45s} {t * 1e3:9.3f} ms", flush=True)
    return {"rows": rows, "train": train}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "ternary_matmul.json"))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    ap.add_argument("--repeat", type=int, default=2,
                    help="run each worker this many times and keep the best time per case (the machine is shared)")
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    shapes = [(K, M) for K in args.sizes for M in (1, 128)]
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.reps, shapes)), flush=True)
        return
    validate()
    results = {"rows": [], "train": []}
    best = {}
    for t in [t for t in args.threads for _ in range(args.repeat)]:
        cmd = [sys.executable, __file__, "--worker", str(t), "--reps", str(args.reps), "--sizes",
               *map(str, args.sizes)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        for line in proc.stdout.splitlines():
            if line.startswith("RESULT "):
                r = json.loads(line[7:])
                for kind in ("rows", "train"):
                    for row in r[kind]:
                        key = (kind, row["threads"], row["M"], row["K"], row["impl"])
                        if key not in best or row["ms"] < best[key]["ms"]:
                            best[key] = row
            else:
                print(line)
        if proc.returncode != 0:
            print(proc.stderr[-4000:])
            raise SystemExit(f"worker with {t} threads failed")
    for (kind, *_), row in best.items():
        results[kind].append(row)
    print()
    print("| M | K=N | threads | impl | ms | GFLOP/s-eq | weight GB/s | speed-up vs MS fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results["rows"]:
        base = [b for b in results["rows"] if b["impl"] == "MindSpore fp32 MatMul" and b["M"] == r["M"]
                and b["K"] == r["K"] and b["threads"] == r["threads"]][0]
        r["speedup_vs_ms_fp32"] = base["ms"] / r["ms"]
        print(f"| {r['M']} | {r['K']} | {r['threads']} | {r['impl']} | {r['ms']:.3f} | {r['gflops']:.1f} | "
              f"{r['weight_GBps']:.2f} | {r['speedup_vs_ms_fp32']:.2f}x |")
    print()
    print("| training forward (M=512, K=N=2048) | threads | ms |")
    print("|---|---|---|")
    for r in results["train"]:
        print(f"| {r['impl']} | {r['threads']} | {r['ms']:.2f} |")
    from bitcpm_ms.kernels import has_avx512_vnni
    from benchmarks.machine import machine_info
    results["targets"] = targets(results)
    results["machine"] = {**machine_info(), "nproc": os.cpu_count(), "avx512_vnni": has_avx512_vnni(),
                          "load_avg_at_end": os.getloadavg(), "group_size": GROUP, "repeat": args.repeat,
                          "note": "best of --repeat worker runs; the 2-core machine was shared with other jobs"}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
