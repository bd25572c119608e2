"""Plain numpy references of the C++ kernels (the specs they are tested against): the ternary
quant-matmul, and the KV-cache decoder's float kernels (decode-step attention, the head's x @ W^T).

    ctx, k_rot = decode_attention_reference(q, k, v, k_cache, v_cache, positions, cos, sin, scale)
    q [B, H*D], k/v [B, KVH*D] (this token, before RoPE), caches [B, KVH, S, D] (rotated keys),
    positions [B] int32 (row b attends to cache slots < positions[b] and to itself), cos/sin [B, D]
    (the RoPE tables at each row's position) -> ctx [B, H*D], k_rot [B, KVH*D]
"""
from __future__ import annotations

import numpy as np

from .packing import PackedTernary, unpack_ternary


def quantize_activations_int8(x: np.ndarray, eps: float = 1e-5):
    """Per-token absmax int8 quantization, identical to the training-time quantizer (ActFakeQuant
    with the same eps, i.e. QuantConfig.eps).

    s = 127 / max(max|x_row|, eps); xq = clip(round_half_even(x * s), -128, 127). float32 throughout.
    Returns (xq int8 [M, K], s float32 [M]).
    """
    x = np.asarray(x, dtype=np.float32)
    amax = np.max(np.abs(x), axis=-1) if x.shape[-1] else np.zeros(x.shape[:-1], np.float32)
    s = (np.float32(127.0) / np.maximum(amax, np.float32(eps))).astype(np.float32)
    xq = np.clip(np.round(x * s[..., None]), -128, 127).astype(np.int8)
    return xq, s


def ternary_matmul_reference(x, packed: PackedTernary, act_bits=None, eps: float = 1e-5) -> np.ndarray:
    """y[M, N] = x[M, K] @ W^T with W = codes * scales (per group). act_bits None or 8.

    Weight-only: per group, sum x where code = +1 minus x where code = -1, times the group scale.
    A8: exact int group sums of xq * codes, times the group scale, summed, divided by s_token
    (activations quantized by quantize_activations_int8 with floor eps).
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise ValueError(f"x must be float32, got {x.dtype}")
    codes, scales = unpack_ternary(packed)
    N, K = packed.shape
    g = packed.group
    G = K // g
    lead = x.shape[:-1]
    x2 = x.reshape(-1, K)
    cg = codes.reshape(N, G, g)
    if act_bits is None:
        xg = x2.reshape(-1, G, g)
        gs = np.einsum("mgk,ngk->mng", xg, cg.astype(np.float32))  # group sums of +-x
        y = np.sum(gs * scales[None], axis=-1, dtype=np.float32)
    elif act_bits == 8:
        xq, s = quantize_activations_int8(x2, eps)
        isum = np.einsum("mgk,ngk->mng", xq.reshape(-1, G, g).astype(np.int64), cg.astype(np.int64))
        y = np.sum(isum.astype(np.float32) * scales[None], axis=-1, dtype=np.float32) / s[:, None]
    else:
        raise ValueError(f"act_bits must be None or 8, got {act_bits!r}")
    return y.astype(np.float32).reshape(*lead, N)


def ternary_matmul_dx_reference(dy, packed: PackedTernary) -> np.ndarray:
    """dx = dy @ W_q (dequantized weight)."""
    return (np.asarray(dy, np.float32) @ packed.dequantize()).astype(np.float32)


# --- the KV-cache decoder's float kernels (ops/ternary_matmul/decode_ops.cpp) ---


def _rope(x, cos, sin):
    """MindFormers' rotate-half RoPE: x * cos + concat(-x2, x1) * sin (x [..., D], cos/sin broadcast)."""
    half = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., half:], x[..., :half]], -1) * sin


def decode_attention_reference(q, k, v, k_cache, v_cache, positions, cos, sin, scale):
    """The numpy specification (float64 internally); see the module docstring for shapes."""
    bsz, kvh, _, d = k_cache.shape
    h = q.shape[1] // d
    rep = h // kvh
    ctx = np.zeros((bsz, h * d))
    k_rot = np.zeros((bsz, kvh * d))
    for b in range(bsz):
        p = int(positions[b])
        c, s = cos[b].astype(np.float64), sin[b].astype(np.float64)
        for g in range(kvh):
            kr = _rope(k[b, g * d:(g + 1) * d].astype(np.float64), c, s)
            k_rot[b, g * d:(g + 1) * d] = kr
            keys = np.concatenate([k_cache[b, g, :p], kr[None]])              # [p + 1, D]
            vals = np.concatenate([v_cache[b, g, :p], v[b, g * d:(g + 1) * d][None]])
            for r in range(rep):
                hh = g * rep + r
                qr = _rope(q[b, hh * d:(hh + 1) * d].astype(np.float64), c, s)
                z = keys @ qr * scale
                w = np.exp(z - z.max())
                ctx[b, hh * d:(hh + 1) * d] = (w / w.sum()) @ vals
    return ctx.astype(np.float32), k_rot.astype(np.float32)


def float_matmul_nt_reference(x, w):
    """y [M, N] = x [M, K] @ w [N, K]^T (float64 internally)."""
    return (np.asarray(x, np.float64) @ np.asarray(w, np.float64).T).astype(np.float32)
