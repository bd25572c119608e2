"""Shard-local quantization under tensor (model) parallelism, in numpy.

MindFormers' LLaMA splits the projections over `mp` ranks:
  column-parallel  wq, wk, wv, w1 (gate), w3 (up): weight [out, in] split along out (rows)
  row-parallel     wo, w2 (down):                  weight [out, in] split along in (columns)
Under semi-auto parallelism every quantizer op carries the weight's strategy, so each rank
quantizes its local shard with scales from that shard only (BitCPM-CANN section 4.2: no
cross-rank reduction).

* Column-parallel: a group never straddles two shards (groups run along `in`), so local and
  global quantization agree for every group size, -1 included.
* Row-parallel: they agree iff g divides in/mp. With g = -1 (one scale per output row) each rank
  uses the mean |W| of its own in/mp columns: shard-local g=-1 under mp ranks is exactly global
  quantization with g = in/mp, not per-channel. `row_parallel_deviation` measures the difference.
"""
import argparse
import json
import os
from typing import Dict, List, Sequence

import numpy as np

from ..quant import QuantConfig
from ..quant.primitives import dequantize_weight, quantize_weight

COLUMN_PARALLEL = ("attention.wq", "attention.wk", "attention.wv", "feed_forward.w1", "feed_forward.w3")
ROW_PARALLEL = ("attention.wo", "feed_forward.w2")


def split_kind(layer_name: str) -> str:
    """'column' or 'row' for a projection name (suffix match), as MindFormers' LLaMA shards it."""
    def match(names):
        return any(layer_name == n or layer_name.endswith("." + n) for n in names)
    if match(COLUMN_PARALLEL):
        return "column"
    if match(ROW_PARALLEL):
        return "row"
    raise ValueError(f"{layer_name!r} is not one of the tensor-parallel projections "
                     f"{COLUMN_PARALLEL + ROW_PARALLEL}")


def shards(w: np.ndarray, mp: int, kind: str) -> List[np.ndarray]:
    """The mp local weight shards of a [out, in] weight."""
    axis = {"column": 0, "row": 1}[kind]
    if w.shape[axis] % mp:
        raise ValueError(f"{kind}-parallel split of a {w.shape} weight over mp={mp}: dimension {axis} "
                         f"({w.shape[axis]}) is not divisible")
    return np.split(w, mp, axis=axis)


def local_quantize(w: np.ndarray, cfg: QuantConfig, mp: int, kind: str):
    """[(codes, scales)] of each rank, quantizing only its own shard."""
    return [quantize_weight(s, cfg) for s in shards(w, mp, kind)]


def local_fake_quant(w: np.ndarray, cfg: QuantConfig, mp: int, kind: str) -> np.ndarray:
    """The full dequantized weight that the mp ranks together use."""
    parts = [dequantize_weight(c, s) for c, s in local_quantize(w, cfg, mp, kind)]
    return np.concatenate(parts, axis={"column": 0, "row": 1}[kind])


def row_parallel_deviation(w: np.ndarray, cfg: QuantConfig, mp: int, tokens: int = 256, seed: int = 0) -> Dict:
    """How far shard-local quantization of a row-parallel weight is from global quantization.

    Returns relative Frobenius error of the dequantized weight, the fraction of ternary codes that
    differ, the spread of the local scales around the global one (max |s_local / s_global - 1|),
    and the relative error of the layer output y = x W^T for Gaussian inputs x [tokens, in].
    """
    w = np.asarray(w, dtype=np.float32)
    glob_c, glob_s = quantize_weight(w, cfg)
    glob_w = dequantize_weight(glob_c, glob_s)
    loc = local_quantize(w, cfg, mp, "row")
    loc_c = np.concatenate([c for c, _ in loc], axis=1)
    loc_w = np.concatenate([dequantize_weight(c, s) for c, s in loc], axis=1)
    g_glob = w.shape[1] // glob_s.shape[1]
    s_glob_full = np.repeat(glob_s, g_glob, axis=1)
    s_loc_full = np.concatenate([np.repeat(s, c.shape[1] // s.shape[1], axis=1) for c, s in loc], axis=1)
    x = np.random.default_rng(seed).standard_normal((tokens, w.shape[1])).astype(np.float32)
    y_glob, y_loc = x @ glob_w.T, x @ loc_w.T
    return {
        "shape": list(w.shape), "mp": mp, "group_size": cfg.group_size,
        "rel_weight_err": float(np.linalg.norm(loc_w - glob_w) / max(np.linalg.norm(glob_w), 1e-30)),
        "code_mismatch_frac": float(np.mean(loc_c != glob_c)),
        "max_scale_ratio_dev": float(np.max(np.abs(s_loc_full / s_glob_full - 1.0))),
        "mean_scale_ratio_dev": float(np.mean(np.abs(s_loc_full / s_glob_full - 1.0))),
        "rel_output_err": float(np.linalg.norm(y_loc - y_glob) / max(np.linalg.norm(y_glob), 1e-30)),
        # for scale: the quantization error of the global per-channel weight itself
        "rel_quant_err_global": float(np.linalg.norm(glob_w - w) / max(np.linalg.norm(w), 1e-30)),
    }


def check_tp_divisibility(model_config, mp: int, group_size: int) -> List[str]:
    """Problems (empty list: none) with splitting a LLaMA/BitCPM config's projections over mp ranks
    and quantizing each shard with `group_size` (-1 allowed: always divisible, but see module doc)."""
    get = (lambda k, d=None: model_config.get(k, d)) if isinstance(model_config, dict) \
        else (lambda k, d=None: getattr(model_config, k, d))
    h, heads = int(get("hidden_size")), int(get("num_heads"))
    kv = int(get("n_kv_heads") or heads)
    inter = int(get("intermediate_size"))
    kv_dim = kv * (h // heads)
    shapes = {"attention.wq": (h, h), "attention.wk": (kv_dim, h), "attention.wv": (kv_dim, h),
              "attention.wo": (h, h), "feed_forward.w1": (inter, h), "feed_forward.w3": (inter, h),
              "feed_forward.w2": (h, inter)}
    problems = [f"{what}={n} not divisible by mp={mp} (MindFormers splits attention heads over mp)"
                for what, n in (("num_heads", heads), ("n_kv_heads", kv)) if n % mp]
    for name, (out_f, in_f) in shapes.items():
        kind = split_kind(name)
        split_dim = out_f if kind == "column" else in_f
        if split_dim % mp:
            problems.append(f"{name} [{out_f}, {in_f}]: {kind}-parallel dimension {split_dim} not divisible by mp={mp}")
            continue
        local_in = in_f if kind == "column" else in_f // mp
        if group_size != -1 and local_in % group_size:
            problems.append(f"{name} [{out_f}, {in_f}]: local input width {local_in} not divisible by "
                            f"group_size={group_size}")
    return problems


# ----------------------------------------------------------------------------------------------
# measurement CLI: python -m bitcpm_ms.parallel.shard_quant [--checkpoint CKPT]
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
