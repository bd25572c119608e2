"""Ternary health at each log interval: zero codes, codes changed since the last log, latent weights
near a rounding boundary (definitions: quant/health.py), summed over the ternary layers of a network.

Why a sample of rows: the statistics need the latent weights on the host and the previous codes kept
between logs. On the tiny model every row is read (each layer has <= 2^18 weights; ~40 ms per log on 2
cores); on a large model each layer contributes a fixed, evenly strided set of whole rows (whole rows
keep the groups complete) of at most `sample` weights, gathered on the device, so a log reads at most
`sample` weights per layer whatever the model's size (8B: 224 layers x 2^18 = 59M weights). Under tensor
parallelism each rank looks at its own shard (the scale is per local shard too, docs/distributed.md).
"""
import time

import numpy as np
from mindspore import ops
import mindspore as ms

from ..quant.health import weight_health
from ..quant.linear import TernaryLinear

DEFAULT_SAMPLE = 1 << 18        # weights per layer


def _rows(out_rows: int, in_features: int, sample: int) -> np.ndarray:
    """Evenly strided row indices, at most `sample` weights (at least one row)."""
    n = max(1, min(out_rows, sample // max(in_features, 1)))
    return np.unique(np.linspace(0, out_rows - 1, n).round().astype(np.int64))


class TernaryHealth:
    """Keeps the previous codes of each layer's sampled rows; `measure(network)` -> the record fields."""

    def __init__(self, sample: int = DEFAULT_SAMPLE):
        if int(sample) < 1:
            raise ValueError(f"ternary health sample must be >= 1 weight per layer, got {sample}")
        self.sample = int(sample)
        self._prev = {}

    @staticmethod
    def layers(network):
        """(name, TernaryLinear) of every weight-quantized layer of the network."""
        return [(n, c) for n, c in network.cells_and_names() if isinstance(c, TernaryLinear) and c.quant_weights]

    def _read(self, cell) -> np.ndarray:
        w = cell.weight
        out_rows, in_features = w.shape
        rows = _rows(out_rows, in_features, self.sample)
        if len(rows) == out_rows:
            return w.asnumpy()
        return ops.gather(w, ms.Tensor(rows.astype(np.int32)), 0).asnumpy()     # [rows, in] on the device

    def measure(self, network) -> dict:
        """{zero_code_frac, code_change_frac (None at the first look), near_boundary_frac,
        ternary_health_ms}, or {} for a network without ternary layers."""
        t = time.perf_counter()
        total = None
        for name, cell in self.layers(network):
            health, codes = weight_health(self._read(cell), cell.quant_config, self._prev.get(name))
            self._prev[name] = codes
            total = health if total is None else total.add(health)
        if total is None:
            return {}
        out = total.fractions()
        out["ternary_health_ms"] = round(1000 * (time.perf_counter() - t), 1)
        return out
