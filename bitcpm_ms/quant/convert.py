"""`convert_model`: turn a trained QAT network into an inference network with packed ternary weights.

Every `TernaryLinear` (ternary space, quantization enabled) in any Cell tree is replaced, under the
same attribute name, by a `PackedTernaryLinear` holding only the 2-bit packed codes and the
per-group scales computed by `quantize_weight(weight, cfg)` (the same codes and scales the
fake-quant forward uses), plus the bias. The latent full-precision weight is dropped. The forward
runs the fused C++ ternary matmul (AOT Custom op); weight-only or W1.58A8 as `cfg.act_bits` says,
with the activation quantizer's floor `cfg.eps`, so A8 layers quantize activations as in training.

Parameter names become `<layer path>.weight_packed`, `<layer path>.weight_scales`,
`<layer path>.bias`, so checkpoints of the converted network stay readable.
"""
import logging

import numpy as np
from mindspore import dtype as mstype
from mindspore import nn
from mindspore import ops

from .config import QuantConfig
from .linear import TernaryLinear
from .primitives import quantize_weight
from .swap import replace_cells
from bitcpm_ms.kernels import PackedTernaryLinear, pack_ternary

logger = logging.getLogger(__name__)


def _to_numpy_f32(t):
    if t.dtype != mstype.float32:
        t = ops.cast(t, mstype.float32)
    return t.asnumpy().astype(np.float32)


def packed_from_ternary_linear(layer: TernaryLinear, name: str = ""):
    """Build the PackedTernaryLinear equivalent of one TernaryLinear."""

    cfg: QuantConfig = layer.quant_config
    where = f" {name!r}" if name else ""
    if cfg.quant_space != "ternary":
        raise ValueError(f"convert_model: layer{where} uses quant_space={cfg.quant_space!r}; only 'ternary' "
                         "layers can be packed into the 2-bit ternary format")
    if cfg.act_bits not in (None, 8):
        raise ValueError(f"convert_model: layer{where} has act_bits={cfg.act_bits}; the packed kernel supports "
                         "weight-only (None) and 8-bit activations only")
    w = _to_numpy_f32(layer.weight)
    codes, scales = quantize_weight(w, cfg)
    packed = pack_ternary(codes, scales, cfg.group_for(w.shape[1]))
    bias = _to_numpy_f32(layer.bias) if layer.has_bias else None
    activation = layer.activation if getattr(layer, "activation_flag", False) else None
    # cfg.eps is also the floor of the A8 activation quantizer (ActFakeQuant): the kernel must use it.
    return PackedTernaryLinear(packed, bias=bias, act_bits=cfg.act_bits, activation=activation, eps=cfg.eps)


def convert_model(net: nn.Cell) -> nn.Cell:
    """Replace every enabled ternary TernaryLinear in `net` (any Cell tree) in place; returns `net`.

    Layers with quantization disabled (`quant_config.enabled=False`) are full precision and are
    left untouched. Raises ValueError for non-ternary spaces or 4-bit activations.
    Passing a TernaryLinear itself returns its packed replacement.
    """
    if isinstance(net, TernaryLinear):
        return _convert_root(net)

    def wanted(name: str, cell: nn.Cell) -> bool:
        return isinstance(cell, TernaryLinear) and cell.quant_config.enabled

    chosen = replace_cells(net, wanted, lambda name, layer: packed_from_ternary_linear(layer, name))
    logger.info("convert_model: %d TernaryLinear layers packed", len(chosen))
    return net


def _convert_root(layer: TernaryLinear):
    if not layer.quant_config.enabled:
        return layer
    return packed_from_ternary_linear(layer)
