"""Packed ternary weights on Ascend: CANN's weight-quantized matmul (A16W4, per-group antiquant scales).

UNVERIFIED: nothing in this file has run on an Ascend 910B. The layout converter is pure numpy and is
tested here against the documented format; `AscendTernaryLinear` follows MindSpore's documented
`ops.auto_generate.WeightQuantBatchMatmul` interface and only runs where that op has a kernel.

CANN's `aclnnWeightQuantBatchMatmulV2` (MindSpore `WeightQuantBatchMatmul(transpose_x, transpose_weight,
antiquant_group_size)`, called as `op(x, weight, antiquant_scale, antiquant_offset, quant_scale,
quant_offset, bias)`) computes
    y[M, N] = x[M, K] @ ANTIQUANT(weight) + bias,   ANTIQUANT(w)[k, n] = (w[k, n] + offset) * scale[k // g, n]
with, as used here (transpose_weight=False, no offset, no output quantization):
  * weight: int4 values in [-8, 7], shape [K, N], two per byte along N (column 2j in the low nibble,
    column 2j + 1 in the high nibble), a MindSpore Tensor of dtype `qint4x2` over int8 [K, N / 2];
    N must be even;
  * antiquant_scale: [K / g, N] in x's dtype (float16 or bfloat16) for per-group, [N] per-channel;
  * antiquant_group_size: g, a multiple of 32 with 32 <= g < K for per-group; 0 for per-channel.
Ternary codes {-1, 0, 1} are int4 values, and our scales are per group of g inputs of each output
row, so the mapping is a transpose plus nibble packing: weight = codes.T, scale = scales.T. There is
no int8-activation variant with per-group weight scales, so W1.58A8 layers map to A16W4 (weight-only).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConversionError
from .packing import PackedTernary, unpack_ternary

GROUP_MULTIPLE = 32


@dataclass
class WeightQuantLayout:
    """Inputs of WeightQuantBatchMatmul for one layer (numpy; see the module docstring)."""
    weight_int4x2: np.ndarray      # int8 [K, N / 2]: low nibble = even column n, high nibble = odd column
    antiquant_scale: np.ndarray    # [K / g, N] (per-group) or [N] (per-channel), float16 / float32
    antiquant_group_size: int      # g, or 0 for per-channel
    shape: tuple                   # (N, K) = (out_features, in_features)


def pack_int4_pairs(values: np.ndarray) -> np.ndarray:
    """int values in [-8, 7], [R, C] with C even -> int8 [R, C / 2], two's-complement nibbles."""
    v = np.asarray(values)
    if v.ndim != 2 or v.shape[1] % 2:
        raise ConversionError(f"int4 packing needs a 2-D array with an even last dimension, got shape {v.shape}")
    if v.size and (v.min() < -8 or v.max() > 7):
        raise ConversionError("int4 values must be in [-8, 7]")
    nib = (v.astype(np.int16) & 0xF).astype(np.uint8)
    return (nib[:, 0::2] | (nib[:, 1::2] << 4)).view(np.int8)


def unpack_int4_pairs(packed: np.ndarray) -> np.ndarray:
    """Inverse of pack_int4_pairs: int8 [R, C / 2] -> int8 [R, C] (sign-extended nibbles)."""
    u = np.asarray(packed).view(np.uint8)
    lo, hi = (u & 0xF).astype(np.int8), (u >> 4).astype(np.int8)
    out = np.empty((u.shape[0], u.shape[1] * 2), np.int8)
    out[:, 0::2], out[:, 1::2] = lo, hi
    return np.where(out > 7, out - 16, out).astype(np.int8)


def to_weight_quant_layout(packed: PackedTernary, scale_dtype=np.float16) -> WeightQuantLayout:
    """Our packed ternary weight -> WeightQuantBatchMatmul's int4 weight, scales and group size."""
    codes, scales = unpack_ternary(packed)             # [N, K] in {-1, 0, 1}, [N, K / g]
    n, k = packed.shape
    g = packed.group
    if n % 2:
        raise ConversionError(f"WeightQuantBatchMatmul packs two int4 weights per byte along N; "
                              f"out_features {n} is odd")
    if g == k:
        return WeightQuantLayout(pack_int4_pairs(codes.T), scales[:, 0].astype(scale_dtype), 0, (n, k))
    if g % GROUP_MULTIPLE or not GROUP_MULTIPLE <= g < k:
        raise ConversionError(f"group size {g} cannot be used by WeightQuantBatchMatmul: per-group needs a "
                              f"multiple of {GROUP_MULTIPLE} in [{GROUP_MULTIPLE}, {k - 1}] (K = {k})")
    return WeightQuantLayout(pack_int4_pairs(codes.T), np.ascontiguousarray(scales.T).astype(scale_dtype), g, (n, k))


def antiquant_reference(layout: WeightQuantLayout) -> np.ndarray:
    """The documented ANTIQUANT(weight) [K, N] in float32: w[k, n] * scale[k // g, n] (no offset)."""
    w = unpack_int4_pairs(layout.weight_int4x2).astype(np.float32)          # [K, N]
    scale = layout.antiquant_scale.astype(np.float32)
    if layout.antiquant_group_size == 0:
        return w * scale[None, :]
    return w * np.repeat(scale, layout.antiquant_group_size, axis=0)


def ascend_ternary_linear(packed_linear, compute_dtype=None):
    """An `AscendTernaryLinear` Cell for a PackedTernaryLinear (UNVERIFIED, Ascend 910B only)."""
    import mindspore as ms
    from mindspore import Parameter, Tensor, nn, ops
    from mindspore.common import dtype as mstype
    from mindspore.ops.auto_generate import WeightQuantBatchMatmul

    dtype = compute_dtype or ms.float16
    layout = to_weight_quant_layout(packed_linear.to_packed(), np.float32)

    class AscendTernaryLinear(nn.Cell):
        """x [..., K] -> [..., N] = x @ (codes * scales)^T (+ bias) on CANN's A16W4 per-group matmul."""

        def __init__(self):
            super().__init__()
            self.in_channels, self.out_channels = layout.shape[1], layout.shape[0]
            self.weight = Parameter(Tensor(layout.weight_int4x2, dtype=mstype.qint4x2), name="weight_int4",
                                    requires_grad=False)
            self.antiquant_scale = Parameter(Tensor(layout.antiquant_scale, dtype), name="antiquant_scale",
                                             requires_grad=False)
            self.bias = None
            if packed_linear.has_bias:
                self.bias = Parameter(Tensor(packed_linear.bias.asnumpy(), dtype), name="bias", requires_grad=False)
            self.matmul = WeightQuantBatchMatmul(False, False, layout.antiquant_group_size)
            self.activation = packed_linear.activation if packed_linear.activation_flag else None

        def construct(self, x):
            out_shape = x.shape[:-1] + (self.out_channels,)
            x2 = ops.cast(ops.reshape(x, (-1, self.in_channels)), dtype)
            y = self.matmul(x2, self.weight, self.antiquant_scale, None, None, None, self.bias)
            if self.activation is not None:
                y = self.activation(y)
            return ops.cast(ops.reshape(y, out_shape), x.dtype)

    return AscendTernaryLinear()
