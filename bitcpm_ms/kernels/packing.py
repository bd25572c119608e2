"""Packed 2-bit storage for ternary weights (pure numpy).

Layout (shared with ``ops/ternary_matmul/ternary_common.h``)
-------------------------------------------------------------
A ternary weight ``codes[out, in]`` (values in {-1, 0, 1}) is stored as ``packed[out, in // 4]``
(uint8) plus ``scales[out, in // g]`` (float32). Each code is stored as ``u = code + 1`` in
{0, 1, 2} (2 bits; the value 3 is invalid), like bitnet.cpp I2_S and llama.cpp TQ2_0.

Along the input dimension each row is cut into blocks of 128 elements; the last block may be
shorter (``r = in % 128``, a multiple of 4). In a block of ``B`` elements with ``q = B // 4`` bytes,
byte ``j`` (0 <= j < q) holds element ``t * q + j`` of the block in bits ``[2t, 2t+1]``,
``t = 0..3`` (first slot in the low bits)::

    byte j = u[j] | u[q + j] << 2 | u[2q + j] << 4 | u[3q + j] << 6

For a full block, shifting its 32 bytes right by ``2t`` and masking with 3 gives the 32
consecutive codes ``32t .. 32t+31`` in byte order: one AVX2 register, no shuffles.

Requirements: ``in % 4 == 0`` and ``in % g == 0``. No padding is done.

Dequantized weight: ``W = codes * np.repeat(scales, g, axis=1)`` (``g = in`` for group_size -1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..layout import resolve_group_size

BLOCK = 128


@dataclass
class PackedTernary:
    """Packed ternary weight: ``packed`` uint8 [out, in/4], ``scales`` float32 [out, in/g]."""

    packed: np.ndarray
    scales: np.ndarray
    group_size: int  # as given: -1 means one scale per output row
    shape: Tuple[int, int]  # (out, in)

    @property
    def out_features(self) -> int:
        return int(self.shape[0])

    @property
    def in_features(self) -> int:
        return int(self.shape[1])

    @property
    def group(self) -> int:
        """Effective group length along the input dimension."""
        return self.in_features if self.group_size == -1 else int(self.group_size)

    @property
    def nbytes(self) -> int:
        return int(self.packed.nbytes + self.scales.nbytes)

    def dequantize(self) -> np.ndarray:
        codes, scales = unpack_ternary(self)
        return codes.astype(np.float32) * np.repeat(scales, self.group, axis=1)

    def validate(self) -> "PackedTernary":
        out, inf = self.shape
        check_packed_group(inf, self.group_size)
        g = self.group
        if not isinstance(self.packed, np.ndarray) or self.packed.dtype != np.uint8:
            raise ValueError(f"packed must be a uint8 numpy array, got {getattr(self.packed, 'dtype', type(self.packed))}")
        if self.packed.shape != (out, inf // 4):
            raise ValueError(f"packed has shape {self.packed.shape}, expected {(out, inf // 4)}")
        if not isinstance(self.scales, np.ndarray) or self.scales.dtype != np.float32:
            raise ValueError(f"scales must be a float32 numpy array, got {getattr(self.scales, 'dtype', type(self.scales))}")
        if self.scales.shape != (out, inf // g):
            raise ValueError(f"scales has shape {self.scales.shape}, expected {(out, inf // g)} for group size {self.group_size}")
        return self


def check_packed_group(in_features: int, group_size: int) -> int:
    """Effective group length; the packed layout also needs in_features to be a multiple of 4."""
    if in_features <= 0 or in_features % 4 != 0:
        raise ValueError(f"in_features must be a positive multiple of 4, got {in_features}")
    return resolve_group_size(in_features, group_size, "the packed weight")


def _blocks(in_features: int):
    """Yield (start, length) of the packing blocks of a row."""
    for s in range(0, in_features, BLOCK):
        yield s, min(BLOCK, in_features - s)


def pack_ternary(codes, scales, group_size: int) -> PackedTernary:
    """Pack int codes in {-1,0,1} [out, in] and float scales [out, in/g] into a PackedTernary."""
    codes = np.asarray(codes)
    scales = np.asarray(scales)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [out, in], got shape {codes.shape}")
    if not (np.issubdtype(codes.dtype, np.integer) or codes.dtype == np.bool_):
        if np.issubdtype(codes.dtype, np.floating) and np.all(np.isfinite(codes)) and np.all(codes == np.round(codes)):
            pass  # integral floats are accepted
        else:
            raise ValueError(f"codes must be an integer array with values in {{-1,0,1}}, got dtype {codes.dtype}")
    out, inf = codes.shape
    g = check_packed_group(inf, group_size)
    if codes.size and (codes.min() < -1 or codes.max() > 1):
        bad = codes[(codes < -1) | (codes > 1)]
        raise ValueError(f"codes must be in {{-1,0,1}}; found value {bad.flat[0]}")
    if scales.ndim != 2 or scales.shape != (out, inf // g):
        raise ValueError(f"scales must have shape {(out, inf // g)} for group_size {group_size}, got {scales.shape}")
    if not np.issubdtype(scales.dtype, np.floating):
        raise ValueError(f"scales must be floating point, got dtype {scales.dtype}")
    u = (codes.astype(np.int16) + 1).astype(np.uint8)
    parts = []
    for s, b in _blocks(inf):
        q = b // 4
        blk = u[:, s:s + b].reshape(out, 4, q)
        parts.append(blk[:, 0] | (blk[:, 1] << 2) | (blk[:, 2] << 4) | (blk[:, 3] << 6))
    packed = np.ascontiguousarray(np.concatenate(parts, axis=1).astype(np.uint8)) if parts else np.zeros((out, 0), np.uint8)
    return PackedTernary(packed=packed, scales=np.ascontiguousarray(scales, dtype=np.float32),
                         group_size=int(group_size), shape=(int(out), int(inf)))


def unpack_ternary(p: PackedTernary):
    """Inverse of pack_ternary: returns (codes int8 [out, in], scales float32 [out, in/g])."""
    p.validate()
    out, inf = p.shape
    codes = np.empty((out, inf), dtype=np.int8)
    for s, b in _blocks(inf):
        q = b // 4
        byt = p.packed[:, s // 4:s // 4 + q]
        for t in range(4):
            codes[:, s + t * q:s + (t + 1) * q] = ((byt >> (2 * t)) & 3).astype(np.int8) - 1
    if np.any(codes == 2):
        raise ValueError("packed data contains the invalid 2-bit code 3 (not a ternary weight)")
    return codes, p.scales.copy()


def bits_per_weight(group_size: int, in_features: int = 4096, scale_bits: int = 32) -> float:
    """Storage bits per weight: 2 bits per code plus one scale per group."""
    g = check_packed_group(in_features, group_size)
    return 2.0 + scale_bits / g


def bits_per_weight_report(in_features: int = 4096, group_sizes=(-1, 32, 64, 128)):
    """Rows (group_size, bits/weight with fp32 scales, with fp16 scales, compression vs bf16 (fp16 scales))."""
    rows = []
    for g in group_sizes:
        b32 = bits_per_weight(g, in_features, 32)
        b16 = bits_per_weight(g, in_features, 16)
        rows.append({"group_size": g, "bits_fp32_scales": b32, "bits_fp16_scales": b16,
                     "vs_bf16_fp16_scales": 16.0 / b16})
    return rows


def format_bits_report(in_features: int = 4096) -> str:
    lines = [f"bits per weight (in_features={in_features}; 2-bit codes, 1.58 bits is the entropy bound)",
             "| group size | fp32 scales | fp16 scales | x smaller than bf16 (fp16 scales) |",
             "|---|---|---|---|"]
    for r in bits_per_weight_report(in_features):
        lines.append(f"| {r['group_size']} | {r['bits_fp32_scales']:.4f} | {r['bits_fp16_scales']:.4f} | "
                     f"{r['vs_bf16_fp16_scales']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(format_bits_report())
