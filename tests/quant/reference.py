"""Plain brute-force reference of the report's quantizers (Table 1), independent of the library.

Scale per group from the table; each element goes to the nearest level of the space's explicit
level set (argmin of the distance). Used only by tests.
"""
import numpy as np
from mindspore import nn

# space: (levels, scale function of |W_group|)
TABLE1 = {
    "ternary": ([-1.0, 0.0, 1.0], lambda a: a.mean()),
    "asym4": ([-2.0, -1.0, 0.0, 1.0], lambda a: a.max() / 1.5),
    "halfsym4": ([-1.5, -0.5, 0.5, 1.5], lambda a: a.max() / 1.5),
    "intsym4": ([-2.0, -1.0, 1.0, 2.0], lambda a: a.max() / 2.0),
    "five": ([-2.0, -1.0, 0.0, 1.0, 2.0], lambda a: a.max() / 2.0),
}


def reference_quantize(w, space, group_size, eps=1e-5):
    """Returns (levels float [out, in], s float [out, in/g]) by explicit loops over groups."""
    levels, scale_fn = TABLE1[space]
    levels = np.asarray(levels)
    out_f, in_f = w.shape
    g = in_f if group_size == -1 else group_size
    lv = np.zeros_like(w, dtype=np.float64)
    s = np.zeros((out_f, in_f // g))
    for r in range(out_f):
        for j in range(in_f // g):
            grp = w[r, j * g:(j + 1) * g].astype(np.float64)
            sc = max(scale_fn(np.abs(grp)), eps)
            s[r, j] = sc
            lv[r, j * g:(j + 1) * g] = levels[np.argmin(np.abs(grp[:, None] / sc - levels[None, :]), axis=1)]
    return lv, s


class WeightedSum(nn.Cell):
    """sum(cell(x) * g): its gradient w.r.t. x (or the cell's weights) is the vector-Jacobian
    product with g, so gradient tests compare layers on the same upstream gradient."""

    def __init__(self, cell, g):
        super().__init__()
        self.cell = cell
        self.g = g

    def construct(self, x):
        return (self.cell(x) * self.g).sum()
