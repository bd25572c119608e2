"""Pseudo-quantized checkpoints in: recover ternary codes and scales, and a latent that reproduces them.

BitCPM-CANN releases store each ternary projection as `codes * scale` in bf16 (`qat-convert
--group_size -1`: one scale per output row). Re-quantizing such a weight with mean|W| keeps the
codes but shrinks the scale by the share of non-zero codes p (mean|W| = p * s), so a naive import
runs every ternary layer at ~0.69x. Here instead:

  * `ternary_group_size(w)`: the coarsest grouping (-1 = whole row, else g inputs per group, g >=
    MIN_GROUP) in which every group holds a single non-zero magnitude; None when `w` is not
    ternary-times-scale at any such grouping (a full-precision tensor);
  * `recover_codes_scales(w, g)`: codes in {-1, 0, 1} and the scale of each group, exactly
    (they are read off the stored values, so bf16 rounding of the scale is kept as published);
  * `latent_for(codes, scales, g)`: the latent weight L = codes * s / p, p = the group's share of
    non-zero codes. Our quantizer (s' = mean|L| = s, codes' = clamp(round(L / s'), -1, 1) = codes,
    since |L| / s = 1 / p >= 1) then computes exactly the published weight, up to float32 rounding
    of the mean (a few ulp of s). Continued QAT therefore starts at the published model's loss;
    an all-zero group stays zero (its scale is then irrelevant).
"""
from typing import Optional, Tuple

import numpy as np

from ..layout import resolve_group_size

MIN_GROUP = 16     # below this, a float tensor could look "ternary" by chance (one value per group)


def _one_magnitude(a: np.ndarray) -> bool:
    """a [..., n] of |w|: does every row hold at most one distinct non-zero value?"""
    big = a.max(axis=-1, keepdims=True)
    return bool(np.all((a == 0) | (a == big)))


def ternary_group_size(w: np.ndarray) -> Optional[int]:
    """-1 if every output row is codes x one scale, else the largest g (a divisor of the input width,
    >= MIN_GROUP) whose groups each hold one magnitude; None if there is none."""
    a = np.abs(np.asarray(w, np.float32))
    if a.ndim != 2:
        return None
    n = a.shape[1]
    if _one_magnitude(a):
        return -1
    for g in sorted((d for d in range(MIN_GROUP, n) if n % d == 0), reverse=True):
        if _one_magnitude(a.reshape(a.shape[0], n // g, g)):
            return g
    return None


def common_group_size(sizes, in_features) -> int:
    """One group size for every tensor, given each tensor's coarsest `ternary_group_size` and input
    width: -1 when all are per row, else the largest g that divides every tensor's coarsest group
    (any divisor of a consistent grouping is consistent too)."""
    coarsest = [n if g == -1 else g for g, n in zip(sizes, in_features)]
    if all(g == -1 for g in sizes):
        return -1
    return int(np.gcd.reduce(np.asarray(coarsest, np.int64)))


def recover_codes_scales(w: np.ndarray, group_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(codes int8 [out, in], scales float32 [out, in/g]) with w == codes * scale per group exactly.
    Raises ValueError when `w` is not ternary x scale at this grouping."""
    w = np.asarray(w, np.float32)
    out_f, in_f = w.shape
    g = resolve_group_size(in_f, group_size)
    grouped = w.reshape(out_f, in_f // g, g)                                   # [out, groups, g]
    scales = np.abs(grouped).max(axis=-1)                                      # [out, groups]
    safe = np.where(scales > 0, scales, 1.0)[..., None]
    codes = np.rint(grouped / safe)
    if not np.array_equal(codes * scales[..., None], grouped):
        raise ValueError("not ternary codes times one scale per group")
    return codes.reshape(out_f, in_f).astype(np.int8), scales.astype(np.float32)


def latent_for(codes: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """The float32 latent weight whose mean|.| quantization gives back codes * scales (see above)."""
    out_f, in_f = codes.shape
    g = resolve_group_size(in_f, group_size)
    c = codes.reshape(out_f, in_f // g, g).astype(np.float32)                 # [out, groups, g]
    nonzero = np.count_nonzero(c, axis=-1)                                     # [out, groups]
    per_unit = np.where(nonzero > 0, scales * g / np.maximum(nonzero, 1), 0.0).astype(np.float32)
    return (c * per_unit[..., None]).reshape(out_f, in_f).astype(np.float32)
