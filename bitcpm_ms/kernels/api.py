"""``ternary_matmul``: the one functional entry point, for numpy arrays and MindSpore Tensors.

numpy in -> numpy out through ctypes (``ops.py``; MindSpore is not imported); Tensor in -> Tensor
out through the AOT op (``ops.py``; PyNative or GRAPH_MODE, with a bprop).
"""
from __future__ import annotations

import numpy as np

from .library import _is_ms_tensor, ternary_matmul_numpy
from .packing import PackedTernary


def ternary_matmul(x, packed: PackedTernary, act_bits=None, eps: float = 1e-5):
    """y = x @ W^T with W the packed ternary weight. act_bits=None: weight-only; 8: W1.58A8, the
    activations quantized per token with s = 127 / max(max|x_row|, eps) (eps: QuantConfig.eps).

    Accepts numpy arrays (returns numpy, via ctypes) or MindSpore Tensors (returns a Tensor, via the
    AOT Custom op). x must be float32 with last dimension in_features."""
    if _is_ms_tensor(x):
        from .ops import ternary_matmul_ms
        return ternary_matmul_ms(x, packed, act_bits, eps)
    if not isinstance(x, np.ndarray):
        raise ValueError(f"x must be a numpy array or a MindSpore Tensor, got {type(x).__name__}")
    return ternary_matmul_numpy(x, packed, act_bits, eps)
