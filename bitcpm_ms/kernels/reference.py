"""Plain numpy reference of the ternary quant-matmul (the spec the C++ kernels are tested against)."""
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
