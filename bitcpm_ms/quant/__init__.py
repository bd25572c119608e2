"""Ternary / low-bit quantization: config, numpy primitives, STE Cells, TernaryLinear, quantize_model."""
from .config import QuantConfig, QUANT_SPACES, DEFAULT_TARGETS
from .primitives import (quantize_weight, dequantize_weight, fake_quant_weight,
                         quantize_activation, fake_quant_activation, SPACES)
from .cells import WeightFakeQuant, ActFakeQuant
from .linear import TernaryLinear
from .api import quantize_model, quantized_layer_names, default_filter

__all__ = ["QuantConfig", "QUANT_SPACES", "DEFAULT_TARGETS", "SPACES", "quantize_weight", "dequantize_weight",
           "fake_quant_weight", "quantize_activation", "fake_quant_activation", "WeightFakeQuant",
           "ActFakeQuant", "TernaryLinear", "quantize_model", "quantized_layer_names", "default_filter"]
