"""Ternary health statistics (quant/health.py) against brute-force counts."""
import numpy as np
import pytest

from bitcpm_ms.quant import QuantConfig
from bitcpm_ms.quant.health import boundaries, space_levels, weight_health
from bitcpm_ms.quant.primitives import quantize_weight


def brute(w, cfg):
    """Zero codes and near-boundary weights counted element by element."""
    codes, scales = quantize_weight(w, cfg)
    g = w.shape[1] // scales.shape[1]
    lv = space_levels(cfg.quant_space)
    mult = 2 if cfg.quant_space == "halfsym4" else 1
    near = 0
    for r in range(w.shape[0]):
        for c in range(w.shape[1]):
            x = w[r, c] / (scales[r, c // g] * mult)
            near += any(abs(x - (a + b) / 2) < 0.05 * (b - a) for a, b in zip(lv[:-1], lv[1:]))
    return int((codes == 0).sum()), near


@pytest.mark.parametrize("space", ["ternary", "5-value", "int-sym-4-value", "half-sym-4-value", "asym-4-value"])
def test_counts_equal_brute_force(space):
    cfg = QuantConfig(quant_space=space, group_size=8)
    w = np.random.default_rng(0).normal(size=(6, 32)).astype(np.float32)
    health, codes = weight_health(w, cfg)
    assert (health.zero, health.near_boundary) == brute(w, cfg)
    assert health.elements == w.size and health.changed is None
    np.testing.assert_array_equal(codes, quantize_weight(w, cfg)[0])


def test_ternary_boundaries_are_at_half_the_scale():
    mids, spacing = boundaries("ternary")
    np.testing.assert_array_equal(mids, [-0.5, 0.5])
    np.testing.assert_array_equal(spacing, [1.0, 1.0])
    assert list(space_levels("int-sym-4-value")) == [-2, -1, 1, 2]


def test_changed_codes_are_counted_against_the_previous_look():
    cfg = QuantConfig(group_size=-1)
    w = np.array([[0.0, 0.2, 1.0, -1.0]], np.float32)       # s = 0.55: codes 0 0 1 -1
    h0, codes0 = weight_health(w, cfg)
    assert list(codes0[0]) == [0, 0, 1, -1] and h0.zero == 2
    w2 = w.copy()
    w2[0, 1] = 0.4                                             # s = 0.6: 0.4 / 0.6 = 0.67 -> code 1
    h1, _ = weight_health(w2, cfg, prev_codes=codes0)
    assert h1.changed == 1 and h1.fractions()["code_change_frac"] == 0.25
    # a weight at exactly the boundary counts as near it; 0.2 / 0.55 = 0.36 does not
    w3 = np.array([[0.5, -0.5, 1.0, 0.0]], np.float32)         # s = 0.5: 1, -1, 2 (clamped), 0
    assert weight_health(w3, cfg)[0].near_boundary == 0        # W/s = +-1 and 2: none near +-0.5
    w4 = np.array([[0.25, 0.0, 0.75, 1.0]], np.float32)        # s = 0.5: 0.5 (boundary), 0, 1.5 (no boundary), 2
    assert weight_health(w4, cfg)[0].near_boundary == 1
