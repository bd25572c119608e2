"""The float kernels of the KV-cache decoder (ops/ternary_matmul/decode_ops.cpp): decode-step
attention and the head's x @ W^T at small M.

The decoder's graphs (bitcpm_ms/inference/decoder.py) call them through the AOT ops of
`decode_attention_op()` / `float_matmul_nt_op()`; `*_numpy` are the ctypes routes and `*_reference`
the plain numpy specifications both are tested against.

    ctx, k_rot = decode_attention_reference(q, k, v, k_cache, v_cache, positions, cos, sin, scale)
    q [B, H*D], k/v [B, KVH*D] (this token, before RoPE), caches [B, KVH, S, D] (rotated keys),
    positions [B] int32 (row b attends to cache slots < positions[b] and to itself), cos/sin [B, D]
    (the RoPE tables at each row's position) -> ctx [B, H*D], k_rot [B, KVH*D]
"""
from __future__ import annotations

import ctypes

import numpy as np

from .build import library_path
from .ops import _load, _raise_kernel


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


def decode_attention_numpy(q, k, v, k_cache, v_cache, positions, cos, sin, scale, num_threads: int = 0):
    """The C++ kernel through ctypes (float32 arrays, positions int32)."""
    arrays = [np.ascontiguousarray(a, np.float32) for a in (q, k, v, k_cache, v_cache)]
    pos = np.ascontiguousarray(positions, np.int32)
    cos, sin = (np.ascontiguousarray(a, np.float32) for a in (cos, sin))
    bsz, kvh, seq, d = arrays[3].shape
    h = arrays[0].shape[1] // d
    ctx = np.empty((bsz, h * d), np.float32)
    k_rot = np.empty((bsz, kvh * d), np.float32)
    lib = _load()
    fn = lib.bitcpm_decode_attention
    fn.restype = ctypes.c_int
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [vp] * 8 + [ctypes.c_float, i64, i64, i64, i64, i64, vp, vp, ctypes.c_int]
    rc = fn(*(a.ctypes.data for a in arrays), pos.ctypes.data, cos.ctypes.data, sin.ctypes.data, float(scale),
            bsz, h, kvh, seq, d, ctx.ctypes.data, k_rot.ctypes.data, int(num_threads))
    if rc:
        _raise_kernel(rc)
    return ctx, k_rot


def float_matmul_nt_reference(x, w):
    """y [M, N] = x [M, K] @ w [N, K]^T (float64 internally)."""
    return (np.asarray(x, np.float64) @ np.asarray(w, np.float64).T).astype(np.float32)


def float_matmul_nt_numpy(x, w, num_threads: int = 0):
    """The C++ kernel through ctypes; w float32, or float16 (the half-precision head)."""
    x = np.ascontiguousarray(x, np.float32)
    half = np.asarray(w).dtype == np.float16
    w = np.ascontiguousarray(w, np.float16 if half else np.float32)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"need x [M, K] and w [N, K], got {x.shape} and {w.shape}")
    y = np.empty((x.shape[0], w.shape[0]), np.float32)
    fn = _load().bitcpm_half_matmul_nt if half else _load().bitcpm_float_matmul_nt
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    rc = fn(x.ctypes.data, w.ctypes.data, y.ctypes.data, x.shape[0], x.shape[1], w.shape[0], int(num_threads))
    if rc:
        _raise_kernel(rc)
    return y


_ops = {}


def _aot(name, out_shape, out_dtype):
    if name not in _ops:
        from mindspore import ops
        _load()
        _ops[name] = ops.Custom(f"{library_path()}:{name}", out_shape=out_shape, out_dtype=out_dtype,
                                func_type="aot")
    return _ops[name]


def decode_attention_op():
    """The AOT op (one per process): op(q, k, v, k_cache, v_cache, positions, cos, sin, spec [1, 2] =
    (scale, H)) -> (ctx [B, H*D], k_rot [B, KVH*D]). Inference only (no bprop)."""
    import mindspore as ms
    return _aot("DecodeAttention", lambda q, k, *rest: (q, k), lambda *a: (ms.float32, ms.float32))


def float_matmul_nt_op():
    """The AOT op: op(x [M, K] float32, w [N, K] float32 or float16) -> y [M, N] float32. Inference only."""
    import mindspore as ms
    return _aot("FloatMatmulNT", lambda x, w: [x[0], w[0]], lambda *a: ms.float32)


def decode_attention_cell(scale: float, num_heads: int):
    """A Cell around the DecodeAttention op binding (scale, heads) as its constant spec input
    (its own scope in profiles: `.../attention_kernel-DecodeAttentionCell/Custom`)."""
    from mindspore import Tensor, nn
    op = decode_attention_op()

    class DecodeAttentionCell(nn.Cell):
        def __init__(self):
            super().__init__()
            self.op = op
            self.spec = Tensor(np.array([[scale, num_heads]], np.float32))

        def construct(self, q, k, v, k_cache, v_cache, positions, cos, sin):
            return self.op(q, k, v, k_cache, v_cache, positions, cos, sin, self.spec)

    return DecodeAttentionCell()


def float_matmul_nt_cell(weight):
    """A Cell computing x [M, K] @ weight [N, K]^T with the FloatMatmulNT op; `weight` is a Parameter
    shared with its owner (e.g. the model's lm_head)."""
    from mindspore import nn
    op = float_matmul_nt_op()

    class FloatMatmulNTCell(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.op = op
            self.weight = weight

        def construct(self, x):
            return self.op(x, self.weight)

    return FloatMatmulNTCell()
