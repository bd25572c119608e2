#!/usr/bin/env python3
"""What crash safety costs per checkpoint: MindSpore's plain save (what MindFormers' CheckpointMonitor
does) against `publish_checkpoint` (the same save into a temporary directory, fsync, sha256, sidecar,
rename, directory fsync), and the verification a resume does (size + sha256 re-read).

    python3 -m benchmarks.checkpoint_save [--samples 15] [--model tiny|small]

The saved state has the tiny config's parameter shapes (7.3M parameters) times three (weights and
the two AdamW moments), float32: about 88 MB, like a real tiny-run checkpoint. Variants are
interleaved, medians with min-max are reported (the machine is shared and noisy). Prints a table and
writes benchmarks/results/checkpoint_save.json.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bitcpm_ms.training.checkpoint_files import publish_checkpoint, verify_checkpoint

SHAPES = {"tiny": dict(vocab=8192, hidden=256, layers=4, kv=128, ffn=768),
          "small": dict(vocab=512, hidden=64, layers=1, kv=32, ffn=128)}


def train_state(vocab, hidden, layers, kv, ffn):
    """{name: float32 array}: weights + adam_m + adam_v with the model's shapes."""
    rng = np.random.default_rng(0)
    shapes = {"model.tok_embeddings.embedding_weight": (vocab, hidden), "lm_head.weight": (vocab, hidden),
              "model.norm_out.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "attention.wq.weight": (hidden, hidden), p + "attention.wk.weight": (kv, hidden),
                       p + "attention.wv.weight": (kv, hidden), p + "attention.wo.weight": (hidden, hidden),
                       p + "feed_forward.w1.weight": (ffn, hidden), p + "feed_forward.w2.weight": (hidden, ffn),
                       p + "feed_forward.w3.weight": (ffn, hidden), p + "attention_norm.weight": (hidden,),
                       p + "ffn_norm.weight": (hidden,)})
    out = {}
    for prefix in ("", "adam_m.", "adam_v."):
        for name, shape in shapes.items():
            out[prefix + name] = rng.standard_normal(shape).astype(np.float32)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=15)
    ap.add_argument("--model", choices=sorted(SHAPES), default="tiny")
    ap.add_argument("--json", default=os.path.join(REPO, "benchmarks", "results", "checkpoint_save.json"))
    args = ap.parse_args(argv)
    import mindspore as ms
    state = train_state(**SHAPES[args.model])
    params = [{"name": k, "data": ms.Tensor(v)} for k, v in state.items()]
    n_bytes = sum(v.nbytes for v in state.values())
    times = {"plain ms.save_checkpoint": [], "publish_checkpoint (atomic + sha256 sidecar)": [],
             "verify (size + sha256)": []}
    with tempfile.TemporaryDirectory(prefix="ckpt_bench_", dir=REPO) as work:
        for i in range(args.samples):
            t = time.perf_counter()
            ms.save_checkpoint(params, os.path.join(work, f"plain_{i % 2}.ckpt"))
            times["plain ms.save_checkpoint"].append(time.perf_counter() - t)
            t = time.perf_counter()
            path = publish_checkpoint(lambda p: ms.save_checkpoint(params, p), os.path.join(work, "rank_0"),
                                      f"run_rank_0-1_{i}.ckpt", {"step": i})
            times["publish_checkpoint (atomic + sha256 sidecar)"].append(time.perf_counter() - t)
            t = time.perf_counter()
            assert verify_checkpoint(path) is None
            times["verify (size + sha256)"].append(time.perf_counter() - t)
            os.remove(path)
            os.remove(path + ".json")
    print(f"checkpoint of {len(state)} tensors, {n_bytes / 2 ** 20:.0f} MiB ({args.model} shapes), "
          f"{args.samples} samples each, interleaved\n")
    print("| operation | median | min - max |")
    print("|---|---|---|")
    res = {"model": args.model, "tensors": len(state), "bytes": n_bytes, "samples": args.samples, "seconds": {}}
    for name, ts in times.items():
        med = statistics.median(ts)
        res["seconds"][name] = {"median": med, "min": min(ts), "max": max(ts)}
        print(f"| {name} | {med * 1e3:.0f} ms | {min(ts) * 1e3:.0f} - {max(ts) * 1e3:.0f} ms |")
    plain = res["seconds"]["plain ms.save_checkpoint"]["median"]
    safe = res["seconds"]["publish_checkpoint (atomic + sha256 sidecar)"]["median"]
    res["overhead_per_save_s"] = safe - plain
    print(f"\ncrash safety adds {1e3 * (safe - plain):.0f} ms per save ({100 * (safe / plain - 1):.0f}%)")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
