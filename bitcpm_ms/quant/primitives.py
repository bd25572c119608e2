"""Pure quantization primitives (no Cells, no state): the numpy reference.

The report's formulas (BitCPM-CANN section 3.1-3.2, Table 1) as numpy functions that also accept
MindSpore tensors (returning the same kind). Tests, export and packing use them; the graph-mode
quantizer Cells in `cells.py` trace the same formulas with MindSpore primitives. Both round half
to even (numpy `round` and MindSpore `Round` agree), so they give identical codes.

Integer encoding of codes (int8): the level itself for every space except half-sym-4-value, whose
levels {-1.5, -0.5, 0.5, 1.5} are stored doubled as {-3, -1, 1, 3}; its returned scales are then
halved so that, for every space, the dequantized weight is exactly `codes * scales` (per group).
"""
from dataclasses import dataclass

import numpy as np
import mindspore as ms

from .config import QuantConfig


@dataclass(frozen=True)
class SpaceSpec:
    """How one quantization space turns a group of weights into levels."""
    statistic: str       # "mean" (mean |W|) or "max" (max |W|)
    divisor: float       # s = max(statistic / divisor, eps)
    lo: float            # lowest level
    hi: float            # highest level
    half_integer: bool = False   # levels are k + 0.5 (half-sym-4-value)
    no_zero: bool = False        # zero is not a level (int-sym-4-value)
    code_multiplier: int = 1     # integer code = level * code_multiplier


SPACES = {
    "ternary": SpaceSpec("mean", 1.0, -1, 1),
    "asym4": SpaceSpec("max", 1.5, -2, 1),
    "halfsym4": SpaceSpec("max", 1.5, -1.5, 1.5, half_integer=True, code_multiplier=2),
    "intsym4": SpaceSpec("max", 2.0, -2, 2, no_zero=True),
    "five": SpaceSpec("max", 2.0, -2, 2),
}


# ----------------------------------------------------------------------------------------------
# numpy reference
# ----------------------------------------------------------------------------------------------
def _to_numpy(x):
    """Return (numpy array, was_mindspore_tensor)."""
    if isinstance(x, np.ndarray):
        return x, False
    if hasattr(x, "asnumpy"):
        return x.asnumpy(), True
    raise TypeError(f"expected a numpy array or a MindSpore Tensor, got {type(x).__name__}")


def _from_numpy(x, as_tensor):
    if not as_tensor:
        return x
    return ms.Tensor(x)


def _check_weight(w, cfg):
    if w.ndim != 2:
        raise ValueError(f"weight must be 2-D [out, in], got shape {w.shape}")
    if not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"weight must be floating point, got dtype {w.dtype}")
    return cfg.group_for(w.shape[1])


def _levels_np(x, spec):
    """Nearest level of the space for each element of x = W / s."""
    if spec.half_integer:
        lv = np.floor(x) + 0.5
    else:
        lv = np.round(x)
        if spec.no_zero:
            lv = np.where(lv == 0, np.where(x >= 0, 1.0, -1.0), lv)
    return np.clip(lv, spec.lo, spec.hi)


def _group_scales_np(wg, spec, eps):
    stat = np.abs(wg).mean(axis=-1, keepdims=True) if spec.statistic == "mean" \
        else np.abs(wg).max(axis=-1, keepdims=True)
    return np.maximum(stat / np.float32(spec.divisor), np.float32(eps)).astype(np.float32)


def quantize_weight(w, cfg: QuantConfig):
    """Quantize a [out, in] weight into integer codes and per-group scales.

    Returns (codes int8 [out, in], scales float32 [out, in // g]) with W_q = codes * scales
    (scale repeated over its g inputs). `g = in` when cfg.group_size == -1.
    Accepts numpy arrays or MindSpore tensors and returns the same kind.
    """
    w_np, as_tensor = _to_numpy(w)
    g = _check_weight(w_np, cfg)
    spec = SPACES[cfg.quant_space]
    out_f, in_f = w_np.shape
    wg = w_np.astype(np.float32).reshape(out_f, in_f // g, g)    # [out, in/g, g]
    s = _group_scales_np(wg, spec, cfg.eps)                       # [out, in/g, 1]
    levels = _levels_np(wg / s, spec)
    codes = (levels * spec.code_multiplier).astype(np.int8).reshape(out_f, in_f)
    scales = (s[..., 0] / np.float32(spec.code_multiplier)).astype(np.float32)
    return _from_numpy(codes, as_tensor), _from_numpy(scales, as_tensor)


def dequantize_weight(codes, scales):
    """codes int8 [out, in], scales [out, in/g] -> float32 [out, in]."""
    c, as_tensor = _to_numpy(codes)
    s, _ = _to_numpy(scales)
    if c.ndim != 2 or s.ndim != 2 or s.shape[0] != c.shape[0] or c.shape[1] % s.shape[1]:
        raise ValueError(f"codes {c.shape} and scales {s.shape} do not describe one grouped weight")
    g = c.shape[1] // s.shape[1]
    w = c.astype(np.float32) * np.repeat(s.astype(np.float32), g, axis=1)
    return _from_numpy(w, as_tensor)


def fake_quant_weight(w, cfg: QuantConfig):
    """Dequantized weight (levels times scale), same shape and dtype as w."""
    w_np, as_tensor = _to_numpy(w)
    codes, scales = quantize_weight(w_np, cfg)
    return _from_numpy(dequantize_weight(codes, scales).astype(w_np.dtype), as_tensor)


def quantize_activation(x, bits: int, eps: float = 1e-5):
    """Per-token absmax quantization (BitNet b1.58): returns (int codes, per-token scale).

    s = Qp / max(|x|, eps) with Qp = 2**(bits-1) - 1; xq = clip(round(x * s), -Qp-1, Qp).
    The dequantized activation is xq / s. Scales have shape x.shape[:-1] + (1,).
    """
    x_np, as_tensor = _to_numpy(x)
    qp = float(2 ** (bits - 1) - 1)
    x32 = x_np.astype(np.float32)
    s = np.float32(qp) / np.maximum(np.abs(x32).max(axis=-1, keepdims=True), np.float32(eps))
    xq = np.clip(np.round(x32 * s), -qp - 1, qp).astype(np.int8 if bits <= 8 else np.int32)
    return _from_numpy(xq, as_tensor), _from_numpy(s.astype(np.float32), as_tensor)


def fake_quant_activation(x, bits: int, eps: float = 1e-5):
    """Dequantized per-token activation, same shape and dtype as x."""
    x_np, as_tensor = _to_numpy(x)
    xq, s = quantize_activation(x_np, bits, eps)
    return _from_numpy((xq.astype(np.float32) / s).astype(x_np.dtype), as_tensor)
