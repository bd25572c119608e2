"""Rotary tables, including MiniCPM4's LongRoPE, as plain numpy (no MindSpore).

MiniCPM4 and BitCPM-CANN configs carry `rope_scaling: {rope_type: longrope, short_factor, long_factor,
original_max_position_embeddings}` (Hugging Face's keys). The real modeling code
(`MiniCPMLongRoPE` in `modeling_minicpm.py`) builds its cos/sin cache as:

    inv_freq[i] = 1 / theta ** (2i / head_dim)                       i < head_dim / 2
    ext        = long_factor if cache_length > original_max else short_factor
    freqs[t,i] = t * (1 / ext[i]) * inv_freq[i]                      float32
    emb        = concat(freqs, freqs)                                rotate-half layout
    cos, sin   = cos(emb) * m, sin(emb) * m,  m = sqrt(1 + ln(max_pos / original_max) / ln(original_max))

The cache is built once for `max_position_embeddings` positions, so every sequence up to that
length uses the same factors (the real configs set max_position_embeddings == original_max, hence
the short factors and m = 1 at every length; position 0 is the only one LongRoPE leaves unchanged).
MindFormers' `FreqsMgr` has no LongRoPE, so `BitCPMForCausalLM` replaces its tables with these;
every forward path (graph, fused CPU attention, prefill / decode, packed, MindIR, Ascend) reads them.
"""
import math
from typing import Optional, Tuple

import numpy as np

SUPPORTED_ROPE_TYPES = ("longrope",)


class RopeScalingError(ValueError):
    """A `rope_scaling` this project cannot reproduce, or one that is malformed."""


def check_rope_scaling(rope_scaling: Optional[dict], head_dim: int) -> Optional[dict]:
    """The validated `rope_scaling` dict (factor lists as floats), or None for plain RoPE.

    Raises RopeScalingError naming the problem: an unsupported type, a missing key, factors whose
    count is not head_dim / 2, or non-positive factors."""
    if not rope_scaling:
        return None
    if not isinstance(rope_scaling, dict):
        raise RopeScalingError(f"rope_scaling must be a mapping (Hugging Face's keys), got {rope_scaling!r}")
    kind = rope_scaling.get("rope_type", rope_scaling.get("type"))
    if kind not in SUPPORTED_ROPE_TYPES:
        raise RopeScalingError(f"rope_scaling type {kind!r} is not supported (supported: "
                               f"{', '.join(SUPPORTED_ROPE_TYPES)}; MiniCPM4 uses longrope)")
    missing = [k for k in ("short_factor", "long_factor", "original_max_position_embeddings")
               if rope_scaling.get(k) is None]
    if missing:
        raise RopeScalingError(f"rope_scaling (longrope) lacks {missing}")
    out = {"rope_type": "longrope",
           "original_max_position_embeddings": int(rope_scaling["original_max_position_embeddings"])}
    for key in ("short_factor", "long_factor"):
        values = [float(v) for v in rope_scaling[key]]
        if len(values) != head_dim // 2:
            raise RopeScalingError(f"rope_scaling.{key} has {len(values)} factors, but head_dim {head_dim} "
                                   f"needs head_dim / 2 = {head_dim // 2}")
        if not all(v > 0 and math.isfinite(v) for v in values):
            raise RopeScalingError(f"rope_scaling.{key} must hold positive finite numbers")
        out[key] = values
    if out["original_max_position_embeddings"] < 2:
        raise RopeScalingError("rope_scaling.original_max_position_embeddings must be >= 2, got "
                               f"{out['original_max_position_embeddings']}")
    return out


def longrope_mscale(max_positions: int, original_max: int) -> float:
    """The cos/sin multiplier: sqrt(1 + ln(max_pos / original_max) / ln(original_max))."""
    return math.sqrt(1.0 + math.log(max_positions / original_max) / math.log(original_max))


def rope_tables(head_dim: int, positions: int, theta: float = 10000.0, rope_scaling: Optional[dict] = None,
                max_position_embeddings: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(cos, sin) float32 [positions, head_dim] in the rotate-half layout.

    `max_position_embeddings` is the model's context (the real code's cache length, which picks the
    factor list and the multiplier); it defaults to `positions`."""
    scaling = check_rope_scaling(rope_scaling, head_dim)
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, head_dim, 2, dtype=np.float32) / np.float32(head_dim))))
    inv_freq = inv_freq.astype(np.float32)                                 # [head_dim / 2]
    t = np.arange(positions, dtype=np.float32)
    mscale = 1.0
    if scaling is None:
        freqs = np.outer(t, inv_freq)
    else:
        cache_len = int(max_position_embeddings or positions)
        orig = scaling["original_max_position_embeddings"]
        ext = np.asarray(scaling["long_factor" if cache_len > orig else "short_factor"], np.float32)
        freqs = np.outer(t, (np.float32(1.0) / ext).astype(np.float32)) * inv_freq    # [positions, head_dim / 2]
        mscale = longrope_mscale(cache_len, orig)
    emb = np.concatenate([freqs, freqs], axis=-1).astype(np.float32)            # [positions, head_dim]
    cos, sin = np.cos(emb), np.sin(emb)
    if mscale != 1.0:
        cos, sin = cos * np.float32(mscale), sin * np.float32(mscale)
    return cos.astype(np.float32), sin.astype(np.float32)
