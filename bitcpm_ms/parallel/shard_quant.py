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
from typing import Dict, List

import numpy as np

from ..layout import PROJECTIONS, config_get, projection_of, projection_shapes
from ..quant import QuantConfig
from ..quant.primitives import dequantize_weight, quantize_weight

COLUMN_PARALLEL = tuple(p.name for p in PROJECTIONS if p.tp_split == "column")
ROW_PARALLEL = tuple(p.name for p in PROJECTIONS if p.tp_split == "row")


def split_kind(layer_name: str) -> str:
    """'column' or 'row' for a projection name (suffix match), as MindFormers' LLaMA shards it."""
    p = projection_of(layer_name)
    if p is None:
        raise ValueError(f"{layer_name!r} is not one of the tensor-parallel projections "
                         f"{COLUMN_PARALLEL + ROW_PARALLEL}")
    return p.tp_split


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


_DIM_NAMES = {"hidden": "hidden_size", "intermediate": "intermediate_size"}


def check_tp_divisibility(model_config, mp: int = 1, group_size: int = -1) -> List[str]:
    """Problems (empty list: none) with splitting a config's projections over `mp` tensor-parallel
    ranks and quantizing each rank's shard with `group_size` (-1: one scale per local row).

    Row-parallel projections (wo, w2) are split along their input, so each rank's groups run over
    in/mp inputs: the group size must divide that local width (see parallel/shard_quant.py).
    With mp = 1 this is the plain "group size divides every input width" check.
    """
    heads = int(config_get(model_config, "num_heads"))
    kv = int(config_get(model_config, "n_kv_heads") or heads)
    problems = [f"{what}={n} not divisible by mp={mp} (MindFormers splits attention heads over mp)"
                for what, n in (("num_heads", heads), ("n_kv_heads", kv)) if n % mp]
    shapes = projection_shapes(model_config)
    for p in PROJECTIONS:
        out_f, in_f = shapes[p.name]
        split_dim = out_f if p.tp_split == "column" else in_f
        if split_dim % mp:
            problems.append(f"{p.name} [{out_f}, {in_f}]: {p.tp_split}-parallel dimension {split_dim} "
                            f"not divisible by mp={mp}")
            continue
        if group_size == -1:
            continue
        if p.tp_split == "row" and mp > 1:
            local = in_f // mp
            msg = (f"quant.group_size={group_size} does not divide the local input width {in_f}/{mp} = {local} "
                   f"of {p.name} [{out_f}, {in_f}] (row-parallel over model_parallel={mp})")
        else:
            local = in_f
            msg = f"quant.group_size={group_size} does not divide model {_DIM_NAMES[p.in_dim]}={in_f}"
        if local % group_size and msg not in problems:
            problems.append(msg)
    return problems
