"""PackedTernaryLinear: inference-only linear layer holding packed 2-bit ternary weights.
  An optional activation Cell (MindFormers Linear's `activation`) is applied after the bias.
  Parameters (all requires_grad=False): ``weight_packed`` uint8 [out, in/4], ``weight_scales``
  float32 [out, in/g], optional ``bias`` float32 [out]. No latent full-precision weight.
  construct: x [..., in] -> reshape to 2-D -> AOT ternary matmul -> (+ bias) -> [..., out].
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops

from .ops import get_ms_op
from .library import _check_mode
from .packing import PackedTernary


class PackedTernaryLinear(nn.Cell):
    """eps: the activation quantizer's floor for act_bits=8 (QuantConfig.eps of the trained layer)."""

    def __init__(self, packed: PackedTernary, bias=None, act_bits=None, activation=None, eps: float = 1e-5):
        super().__init__()
        packed.validate()
        _check_mode(act_bits, eps)
        self.in_channels = packed.in_features
        self.out_channels = packed.out_features
        self.group_size = packed.group_size
        self.act_bits = act_bits
        self.eps = float(eps)
        self.weight_packed = Parameter(Tensor(packed.packed), name="weight_packed", requires_grad=False)
        self.weight_scales = Parameter(Tensor(packed.scales), name="weight_scales", requires_grad=False)
        self.has_bias = bias is not None
        if self.has_bias:
            b = bias.asnumpy() if hasattr(bias, "asnumpy") else np.asarray(bias)
            b = np.asarray(b, np.float32).reshape(-1)
            if b.shape != (self.out_channels,):
                raise ValueError(f"bias must have shape ({self.out_channels},), got {b.shape}")
            self.bias = Parameter(Tensor(b), name="bias", requires_grad=False)
        self.matmul = get_ms_op(act_bits, eps)
        self.reshape = ops.Reshape()
        self.cast = ops.Cast()
        self.activation_flag = activation is not None
        if self.activation_flag:
            self.activation = activation

    def to_packed(self) -> PackedTernary:
        return PackedTernary(self.weight_packed.asnumpy(), self.weight_scales.asnumpy(), self.group_size,
                             (self.out_channels, self.in_channels))

    def construct(self, x):
        out_shape = x.shape[:-1] + (self.out_channels,)
        in_dtype = x.dtype
        x2 = self.cast(self.reshape(x, (-1, self.in_channels)), ms.float32)
        y = self.matmul(x2, self.weight_packed, self.weight_scales)
        if self.has_bias:
            y = y + self.bias
        if self.activation_flag:
            y = self.activation(y)
        y = self.reshape(y, out_shape)
        if in_dtype != ms.float32:
            y = self.cast(y, in_dtype)
        return y

    def extend_repr(self):
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, group_size={self.group_size}, "
                f"act_bits={self.act_bits}, eps={self.eps}, has_bias={self.has_bias}")
