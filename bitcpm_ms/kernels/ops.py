"""The C++ kernels as MindSpore ops: AOT ``ops.Custom`` primitives (with bprop) and the
``TernaryMatmul`` Cell that binds the A8 activation quantizer's eps.

Works in PyNative and GRAPH_MODE and exports to MindIR. The primitives and ctypes share one
loaded library (``library._load``), so the settings of ``library.py`` (threads, ISA caps) apply here too.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .build import library_path
from .library import _check, _check_mode, _load
from .packing import PackedTernary

_ms_ops = {}


def _custom(func_name, out_shape, bprop=None):

    return ops.Custom(f"{library_path()}:{func_name}", out_shape=out_shape,
                      out_dtype=lambda *a: ms.float32, func_type="aot", bprop=bprop)


def _matmul_primitive(act_bits=None):
    """The AOT Custom op itself (cached, one per mode), with its bprop. Most callers want
    `get_ms_op`, which binds eps.

    Weight-only: ``op(x [M,K] f32, packed [N,K/4] u8, scales [N,G] f32) -> y [M,N] f32``.
    A8: ``op(x, packed, scales, spec [1,1] f32 = (eps,)) -> y``: eps, the activation quantizer's
    floor, is an input tensor (a constant in graphs and MindIR), like TernaryFakeQuant's spec.
    bprop: dx = dy @ W_q via the TernaryMatmulDx kernel; packed/scales (and spec) get zero
    gradients (they are frozen inference weights)."""
    key = 8 if act_bits == 8 else 0
    if key in _ms_ops:
        return _ms_ops[key]
    _load()  # make sure settings from the environment are applied

    dx_op = _ms_ops.get("dx")
    if dx_op is None:
        dx_op = _custom("TernaryMatmulDx", lambda dy, p, s: (dy[0], p[1] * 4))
        _ms_ops["dx"] = dx_op
    zeros_like = ops.ZerosLike()

    if key == 8:
        def bprop(x, packed, scales, spec, out, dout):
            return dx_op(dout, packed, scales), zeros_like(packed), zeros_like(scales), zeros_like(spec)

        op = _custom("TernaryMatmulA8", lambda x, p, s, spec: (x[0], p[0]), bprop=bprop)
    else:
        def bprop(x, packed, scales, out, dout):
            return dx_op(dout, packed, scales), zeros_like(packed), zeros_like(scales)

        op = _custom("TernaryMatmulW", lambda x, p, s: (x[0], p[0]), bprop=bprop)
    _ms_ops[key] = op
    return op


def get_ms_op(act_bits=None, eps: float = 1e-5):
    """A new `TernaryMatmul` Cell ``op(x [M,K] f32, packed [N,K/4] u8, scales [N,G] f32) -> y [M,N] f32``
    (PyNative and GRAPH_MODE, exportable, with the bprop of `_matmul_primitive`). act_bits None:
    weight-only; 8: W1.58A8 with activation quantizer floor eps (QuantConfig.eps of the trained model)."""
    _check_mode(act_bits, eps)
    return TernaryMatmul(act_bits, eps)


def get_fake_quant_op():
    """AOT op ``fq(w [N,K] f32, spec [1,2] f32 = (group_size, eps)) -> wq [N,K] f32``: the ternary
    weight fake-quantization in one C++ pass (CPU). It has no bprop of its own: it is meant to sit
    inside `WeightFakeQuant`, whose bprop is the straight-through estimator."""
    if "fq" not in _ms_ops:
        _load()
        _ms_ops["fq"] = _custom("TernaryFakeQuant", lambda w, spec: w)
    return _ms_ops["fq"]


def _ms_weights(packed: PackedTernary):
    cache = packed.__dict__.setdefault("_ms_cache", {})
    key = (id(packed.packed), id(packed.scales))
    if key not in cache:
        cache.clear()
        cache[key] = (ms.Tensor(packed.packed), ms.Tensor(packed.scales))
    return cache[key]


_functional_cells = {}  # (act_bits, eps) -> TernaryMatmul Cell of the functional MindSpore route


def ternary_matmul_ms(x, packed: PackedTernary, act_bits=None, eps: float = 1e-5):
    """MindSpore route: x Tensor float32 [..., K] -> Tensor [..., N] via the AOT op."""
    _check(x.shape, x.dtype, packed, act_bits, eps)
    w, s = _ms_weights(packed)
    K, N = packed.in_features, packed.out_features
    lead = tuple(x.shape[:-1])
    key = (act_bits, float(eps))
    if key not in _functional_cells:
        _functional_cells[key] = get_ms_op(act_bits, eps)
    y = _functional_cells[key](x.reshape(-1, K), w, s)
    return y.reshape(*lead, N)


class TernaryMatmul(nn.Cell):
    """y [M,N] = x [M,K] f32 @ W^T, W given as packed [N,K/4] u8 and scales [N,G] f32.

    act_bits None: weight-only; 8: W1.58A8 with s = 127 / max(max|x_row|, eps). eps reaches the
    kernel as a constant [1,1] float32 input (`spec`), so it is part of the graph and of a MindIR
    export, not a Parameter (checkpoints are unchanged)."""

    def __init__(self, act_bits=None, eps: float = 1e-5):
        super().__init__()
        _check_mode(act_bits, eps)
        self.act_bits = act_bits
        self.eps = float(eps)
        self.a8 = act_bits == 8
        self.op = _matmul_primitive(act_bits)
        self.spec = Tensor(np.array([[eps]], np.float32))  # read by the A8 op only

    def construct(self, x, packed, scales):
        if self.a8:
            return self.op(x, packed, scales, self.spec)
        return self.op(x, packed, scales)

    def extend_repr(self):
        return f"act_bits={self.act_bits}, eps={self.eps}"


# --- the KV-cache decoder's float kernels as AOT ops (decode_ops.cpp) ---

_ops = {}


def _aot(name, out_shape, out_dtype, key=None):
    """The AOT Custom op of entry point `name`, one per process and `key` (default: the name)."""
    key = name if key is None else key
    if key not in _ops:
        _load()
        _ops[key] = ops.Custom(f"{library_path()}:{name}", out_shape=out_shape, out_dtype=out_dtype,
                               func_type="aot")
    return _ops[key]


def decode_attention_op():
    """The AOT op (one per process): op(q, k, v, k_cache, v_cache, positions, cos, sin, spec [1, 2] =
    (scale, H)) -> (ctx [B, H*D], k_rot [B, KVH*D]). Inference only (no bprop)."""
    return _aot("DecodeAttention", lambda q, k, *rest: (q, k), lambda *a: (ms.float32, ms.float32))


def float_matmul_nt_op():
    """The AOT op: op(x [M, K] float32, w [N, K] float32 or float16) -> y [M, N] float32. Inference only."""
    return _aot("FloatMatmulNT", lambda x, w: [x[0], w[0]], lambda *a: ms.float32)


def decode_attention_cell(scale: float, num_heads: int):
    """A Cell around the DecodeAttention op binding (scale, heads) as its constant spec input
    (its own scope in profiles: `.../attention_kernel-DecodeAttentionCell/Custom`)."""
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
    op = float_matmul_nt_op()

    class FloatMatmulNTCell(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.op = op
            self.weight = weight

        def construct(self, x):
            return self.op(x, self.weight)

    return FloatMatmulNTCell()
