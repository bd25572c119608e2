#!/usr/bin/env python3
"""Shard-local vs global ternary quantization of row-parallel weights (tensor parallelism).

    python3 -m benchmarks.shard_quant [--checkpoint CKPT] [--mp 2 4 8] [--group_sizes -1 128] \
        [--out benchmarks/results/shard_quant_rowparallel.json]

Prints, for random 8B/tiny-shaped weights (and the row-parallel weights of a trained checkpoint),
how far each rank's shard-local quantization is from global quantization; see
bitcpm_ms/parallel/shard_quant.py and docs/distributed.md.
"""
import argparse
import json
import os
from typing import Dict, List, Sequence

import numpy as np

from bitcpm_ms.parallel import row_parallel_deviation, split_kind
from bitcpm_ms.quant import QuantConfig


# ----------------------------------------------------------------------------------------------
def _random_cases(seed=0):
    rng = np.random.default_rng(seed)
    # (name, shape): a tiny-config and an 8B-config row-parallel shape, MindFormers' init (std 0.02)
    return [(f"random {n} {shape}", (rng.standard_normal(shape) * 0.02).astype(np.float32))
            for n, shape in (("tiny wo", (256, 256)), ("tiny w2", (256, 768)),
                             ("8b wo", (4096, 4096)), ("8b w2", (4096, 16384)))]


def _checkpoint_cases(path: str):
    import mindspore as ms
    params = ms.load_checkpoint(path)
    out = []
    for name, p in sorted(params.items()):
        if name.startswith(("adam", "accu")) or not name.endswith(".weight"):
            continue
        try:
            if split_kind(name[:-len(".weight")]) == "row":
                out.append((f"trained {name}", p.asnumpy().astype(np.float32)))
        except ValueError:
            continue
    return out


def measure(cases, mps: Sequence[int], group_sizes: Sequence[int]) -> List[Dict]:
    rows = []
    for label, w in cases:
        for mp in mps:
            if w.shape[1] % mp:
                continue
            for g in group_sizes:
                if g != -1 and (w.shape[1] // mp) % g:
                    continue
                rows.append({"weight": label, **row_parallel_deviation(w, QuantConfig(group_size=g), mp)})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description="Shard-local vs global ternary quantization of row-parallel weights")
    p.add_argument("--checkpoint", default=None, help="a trained checkpoint (.ckpt) to measure too")
    p.add_argument("--mp", type=int, nargs="+", default=[2, 4, 8])
    p.add_argument("--group_sizes", type=int, nargs="+", default=[-1, 128])
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    cases = _random_cases() + (_checkpoint_cases(args.checkpoint) if args.checkpoint else [])
    rows = measure(cases, args.mp, args.group_sizes)
    for r in rows:
        print(f"{r['weight']:<55} mp={r['mp']} g={r['group_size']:>4}  weight err {r['rel_weight_err']:.4f}  "
              f"codes differ {100 * r['code_mismatch_frac']:.2f}%  scale dev max {r['max_scale_ratio_dev']:.3f} "
              f"mean {r['mean_scale_ratio_dev']:.3f}  output err {r['rel_output_err']:.4f}  "
              f"(quant err {r['rel_quant_err_global']:.3f})")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump({"checkpoint": args.checkpoint, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
