#!/usr/bin/env python3
"""What folding the clip factor into CpuFusedAdamW saves: the separate scaling pass, timed alone.

    python3 -m benchmarks.clip_fold [--config tiny] [--reps 60] [--json benchmarks/results/clip_fold.json]

Why: the Trainer-vs-raw-loop gap (0.91x once measured) was attributed to the wrapper's clipping.
On a machine at load 10+ a whole-step comparison cannot resolve a few percent, so this times the
pieces alone, in graph mode on the gradients' real shapes (random values), interleaved, CPU and wall
time per call: `scale_pass` = the wrapper's old hyper_map(grad * factor) over every gradient;
`scale_then_adamw` = that pass then CpuFusedAdamW; `adamw_folded` = CpuFusedAdamW given the factor.
"""
import argparse
import os
import statistics
import time

import numpy as np

from benchmarks import bench_models as B
from benchmarks.machine import write_results

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "clip_fold.json")


def build(params):
    import mindspore as ms
    from mindspore import nn
    from mindspore.ops import composite as C
    from mindspore.ops import functional as F
    from bitcpm_ms.training import CpuFusedAdamW
    from bitcpm_ms.training.wrapper import _scale

    class Scale(nn.Cell):
        def __init__(self):
            super().__init__()
            self.hyper_map = C.HyperMap()

        def construct(self, factor, grads):
            return self.hyper_map(F.partial(_scale, factor), grads)

    class Update(nn.Cell):
        def __init__(self, fold):
            super().__init__()
            self.opt = CpuFusedAdamW(params, learning_rate=B.LR, betas=B.BETAS, eps=B.EPS, weight_decay=B.WD)
            self.fold, self.hyper_map = fold, C.HyperMap()

        def construct(self, factor, grads):
            if self.fold:
                return self.opt(grads, factor)
            return self.opt(self.hyper_map(F.partial(_scale, factor), grads))

    assert ms.get_context("mode") == ms.GRAPH_MODE
    return {"scale_pass": Scale(), "scale_then_adamw": Update(False), "adamw_folded": Update(True)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny", choices=sorted(B.CONFIGS))
    p.add_argument("--reps", type=int, default=60)
    p.add_argument("--json", default=RESULTS)
    args = p.parse_args()
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    params = B.ms_network(B.CONFIGS[args.config], 64, True).trainable_params()
    rng = np.random.default_rng(0)
    grads = tuple(ms.Tensor((rng.standard_normal(q.shape) * 1e-3).astype(np.float32)) for q in params)
    factor = ms.Tensor(0.5, ms.float32)
    cells = build(params)

    def call(cell):
        out = cell(factor, grads)
        (out[0] if isinstance(out, tuple) else out).asnumpy()
    for cell in cells.values():
        for _ in range(3):
            call(cell)
    samples = {k: {"wall_ms": [], "cpu_ms": []} for k in cells}
    for _ in range(args.reps):
        for k, cell in cells.items():
            c0, t0 = time.process_time(), time.perf_counter()
            call(cell)
            samples[k]["wall_ms"].append((time.perf_counter() - t0) * 1e3)
            samples[k]["cpu_ms"].append((time.process_time() - c0) * 1e3)
    summary = {k: {m: {"median": statistics.median(v), "q1_q3": statistics.quantiles(v, n=4)[::2]}
                   for m, v in s.items()} for k, s in samples.items()}
    for k, s in summary.items():
        print(f"{k:18s} wall {s['wall_ms']['median']:7.2f} ms (q1-q3 {s['wall_ms']['q1_q3'][0]:.2f}-"
              f"{s['wall_ms']['q1_q3'][1]:.2f}), CPU {s['cpu_ms']['median']:7.2f} ms")
    elements = sum(int(np.prod(q.shape)) for q in params)
    write_results({"config": args.config, "parameters": len(params), "elements": elements, "reps": args.reps,
                   "summary": summary}, args.json)


if __name__ == "__main__":
    main()
