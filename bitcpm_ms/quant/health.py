"""Ternary health statistics of a quantized weight (numpy): what users of ternary QAT watch.

Three numbers per weight, all shares of its elements:

* **zero codes**: codes equal to 0 (for ternary, the pruned share of the weight; a value drifting
  towards 1 or 0 means the scale `mean(|W|)` no longer matches the weight distribution);
* **codes changed**: codes that differ from the codes of the previous look (the same rows), i.e. how
  much the quantized model still moves; it falls towards 0 as QAT converges, and a late rise flags
  instability (the report's "fails to recover in the decay" at too high an LR);
* **near a boundary**: latent weights within 5% of the level spacing of a rounding boundary, in units
  of the group scale (for ternary `|W/s|` in (0.45, 0.55)): weights one small update away from
  flipping. Boundaries are the midpoints between adjacent levels of the space (the clamp at the
  outer levels is no boundary), so the definition holds for every space of `primitives.SPACES`.

`weight_health` is the pure function; the metrics callback (training/ternary_health.py) feeds it a
fixed subset of rows of each ternary layer at each log interval.
"""
from dataclasses import dataclass

import numpy as np

from .config import QuantConfig
from .primitives import SPACES, quantize_weight

NEAR_BOUNDARY = 0.05      # share of the level spacing


def space_levels(quant_space: str) -> np.ndarray:
    """The levels of a space in units of the scale s, sorted (W / s rounds to one of them)."""
    spec = SPACES[QuantConfig(quant_space=quant_space).quant_space]
    if spec.half_integer:
        return np.arange(spec.lo, spec.hi + 0.5, 1.0)
    levels = np.arange(spec.lo, spec.hi + 1, 1.0)
    return levels[levels != 0] if spec.no_zero else levels


def boundaries(quant_space: str):
    """(midpoints between adjacent levels, spacing of each pair), in units of the scale."""
    lv = space_levels(quant_space)
    return (lv[1:] + lv[:-1]) / 2, lv[1:] - lv[:-1]


@dataclass
class WeightHealth:
    elements: int
    zero: int                 # codes == 0
    near_boundary: int        # latent within NEAR_BOUNDARY x spacing of a boundary
    changed: int = None       # codes != previous codes (None without a previous look)

    def add(self, other: "WeightHealth") -> "WeightHealth":
        changed = None if self.changed is None or other.changed is None else self.changed + other.changed
        return WeightHealth(self.elements + other.elements, self.zero + other.zero,
                            self.near_boundary + other.near_boundary, changed)

    def fractions(self) -> dict:
        n = max(self.elements, 1)
        return {"zero_code_frac": self.zero / n, "near_boundary_frac": self.near_boundary / n,
                "code_change_frac": None if self.changed is None else self.changed / n}


def weight_health(w: np.ndarray, cfg: QuantConfig, prev_codes: np.ndarray = None):
    """(WeightHealth, codes int8 [rows, in]) of a [rows, in] latent weight (whole rows: groups complete)."""
    w = np.asarray(w, np.float32)
    codes, scales = quantize_weight(w, cfg)
    g = w.shape[1] // scales.shape[1]
    spec = SPACES[cfg.quant_space]
    x = w.reshape(w.shape[0], -1, g) / (scales[..., None] * spec.code_multiplier)     # W / s [rows, in/g, g]
    mids, spacing = boundaries(cfg.quant_space)
    dist = np.abs(x[..., None] - mids) / spacing                                      # [rows, in/g, g, n_mids]
    near = int(np.count_nonzero((dist < NEAR_BOUNDARY).any(-1)))
    changed = None
    if prev_codes is not None and prev_codes.shape == codes.shape:
        changed = int(np.count_nonzero(prev_codes != codes))
    return WeightHealth(int(codes.size), int(np.count_nonzero(codes == 0)), near, changed), codes
