"""llama.cpp's ternary GGUF blocks (TQ2_0, TQ1_0) written from our codes and scales (pure numpy).

Both formats cut each row into blocks of QK_K = 256 weights with one fp16 scale `d` per block;
the dequantized weight is `d * q`, q in {-1, 0, 1} (ggml-quants.c `dequantize_row_tq*_0`).

* TQ2_0 (66 bytes / 256 weights, 2.0625 bits): `qs[64]` then `d`. Each half block of 128 weights
  is 32 bytes; byte m holds weights m, 32+m, 64+m, 96+m as `q + 1` in bits 0-1, 2-3, 4-5, 6-7.
  That is exactly our 128-weight packed layout (`packing.pack_ternary`, "I2_S / TQ2_0
  convention"), so a TQ2_0 row is our packed row cut into 64-byte pieces, each followed by d.
* TQ1_0 (54 bytes / 256 weights, 1.6875 bits): `qs[48]`, `qh[4]`, `d`. Weights 0-159 go five per
  byte into qs[0:32] (byte m: weights m, 32+m, ..., 128+m), weights 160-239 five per byte into
  qs[32:48] (byte m: 160+m, 176+m, ..., 224+m), weights 240-255 four per byte into qh (byte j:
  240+j, 244+j, 248+j, 252+j, then one zero trit). A byte holding trits t1..t5 (t = q + 1, t1
  most significant) stores ceil(256 * sum(t_i * 3^(5-i)) / 243): the fixed-point fraction llama.cpp
  decodes with one multiply per trit.

Our model has one scale per group of g inputs. The blocks are exact (every weight equals
`code * fp16(scale)`) when the scale is constant over each 256-weight block: rows a multiple of
256 and g = -1 or a multiple of 256 (`block_scales`). Otherwise `requantize_block_scales` keeps
the codes and fits one least-squares scale per block; its weight error is measured, not hidden.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConversionError
from ..layout import resolve_group_size
from .packing import pack_ternary

QK_K = 256
BLOCK_BYTES = {"tq2_0": QK_K // 4 + 2, "tq1_0": 48 + 4 + 2}
_POW3 = np.array([81, 27, 9, 3, 1], dtype=np.int32)


def tq_representable(in_features: int, group_size: int) -> bool:
    """True when one scale per 256-weight block reproduces our per-group scales exactly."""
    g = resolve_group_size(in_features, group_size)
    return in_features % QK_K == 0 and g % QK_K == 0


def _check_codes(codes: np.ndarray, what: str):
    if codes.ndim != 2:
        raise ConversionError(f"{what}: codes must be 2-D [out, in], got shape {codes.shape}")
    if codes.shape[1] % QK_K:
        raise ConversionError(f"{what}: TQ2_0/TQ1_0 need rows that are a multiple of {QK_K} weights; "
                              f"this weight has {codes.shape[1]} inputs (export it with --gguf_type f16 or f32)")
    if codes.size and (codes.min() < -1 or codes.max() > 1):
        raise ConversionError(f"{what}: codes must be in {{-1, 0, 1}}")


def block_scales(scales: np.ndarray, in_features: int, group_size: int, what: str = "weight") -> np.ndarray:
    """Per-group scales [out, in/g] -> one scale per 256-block [out, in/256] (float32), exactly.
    Raises ConversionError when a block would span groups with different scales."""
    g = resolve_group_size(in_features, group_size, what)
    if in_features % QK_K:
        raise ConversionError(f"{what}: TQ2_0/TQ1_0 need rows that are a multiple of {QK_K} weights; "
                              f"this weight has {in_features} inputs (export it with --gguf_type f16 or f32)")
    if g % QK_K:
        raise ConversionError(
            f"{what}: group size {group_size} (groups of {g} weights) cannot be represented by TQ2_0/TQ1_0, "
            f"which keep one scale per block of {QK_K} weights; train with group_size {QK_K} or -1, export "
            f"with --gguf_type f16/f32 (exact), or pass --requantize to fit one scale per block (lossy)")
    return np.repeat(np.asarray(scales, np.float32), g // QK_K, axis=1)


def requantize_block_scales(codes: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """One least-squares scale per 256-block for the weight codes * scales, keeping the codes:
    d = sum_k |w_k| |c_k| / sum_k c_k^2 over the block (the weighted mean of its group scales).
    Returns [out, in/256] float32; all-zero blocks get 0."""
    codes = np.asarray(codes)
    _check_codes(codes, "requantize")
    out_f, in_f = codes.shape
    g = resolve_group_size(in_f, group_size)
    w = np.abs(codes.astype(np.float32) * np.repeat(np.asarray(scales, np.float32), g, axis=1))
    nz = (codes != 0).reshape(out_f, in_f // QK_K, QK_K).sum(-1).astype(np.float64)
    num = w.reshape(out_f, in_f // QK_K, QK_K).sum(-1, dtype=np.float64)
    return np.where(nz > 0, num / np.maximum(nz, 1), 0.0).astype(np.float32)


def _fp16_bytes(d: np.ndarray) -> np.ndarray:
    """float32 [out, nb] -> little-endian fp16 bytes [out, nb, 2]."""
    return np.ascontiguousarray(d.astype("<f2")).view(np.uint8).reshape(*d.shape, 2)


def pack_tq2_0(codes: np.ndarray, block_d: np.ndarray) -> np.ndarray:
    """codes [out, in] in {-1,0,1}, block scales [out, in/256] -> TQ2_0 bytes [out, in/256 * 66]."""
    codes = np.asarray(codes)
    _check_codes(codes, "TQ2_0")
    out_f, in_f = codes.shape
    nb = in_f // QK_K
    qs = pack_ternary(codes, np.zeros((out_f, 1), np.float32), -1).packed.reshape(out_f, nb, QK_K // 4)
    return np.concatenate([qs, _fp16_bytes(block_d)], axis=2).reshape(out_f, nb * BLOCK_BYTES["tq2_0"])


def _trit_bytes(t: np.ndarray) -> np.ndarray:
    """t [..., k, 5] in {0,1,2} (most significant first) -> the fixed-point bytes [..., k]."""
    v = (t.astype(np.int32) * _POW3).sum(-1)
    return ((v * 256 + 242) // 243).astype(np.uint8)


def pack_tq1_0(codes: np.ndarray, block_d: np.ndarray) -> np.ndarray:
    """codes [out, in] in {-1,0,1}, block scales [out, in/256] -> TQ1_0 bytes [out, in/256 * 54]."""
    codes = np.asarray(codes)
    _check_codes(codes, "TQ1_0")
    out_f, in_f = codes.shape
    nb = in_f // QK_K
    t = (codes.astype(np.int8) + 1).reshape(out_f, nb, QK_K)
    # weights 0..159: byte m (0..31) holds m + 32n, n = 0..4   -> [out, nb, 5, 32] -> [out, nb, 32, 5]
    qs0 = _trit_bytes(t[..., :160].reshape(out_f, nb, 5, 32).transpose(0, 1, 3, 2))
    # weights 160..239: byte m (0..15) holds 160 + m + 16n, n = 0..4
    qs1 = _trit_bytes(t[..., 160:240].reshape(out_f, nb, 5, 16).transpose(0, 1, 3, 2))
    # weights 240..255: byte j (0..3) holds 240 + j + 4m, m = 0..3, then a zero trit
    tail = t[..., 240:].reshape(out_f, nb, 4, 4).transpose(0, 1, 3, 2)
    qh = _trit_bytes(np.concatenate([tail, np.zeros((out_f, nb, 4, 1), np.int8)], axis=-1))
    return np.concatenate([qs0, qs1, qh, _fp16_bytes(block_d)], axis=2).reshape(out_f, nb * BLOCK_BYTES["tq1_0"])


def pack_tq(kind: str, codes: np.ndarray, block_d: np.ndarray) -> np.ndarray:
    if kind == "tq2_0":
        return pack_tq2_0(codes, block_d)
    if kind == "tq1_0":
        return pack_tq1_0(codes, block_d)
    raise ConversionError(f"unknown ternary GGUF type {kind!r}: use tq2_0 or tq1_0")


def dequantize_tq(codes: np.ndarray, block_d: np.ndarray) -> np.ndarray:
    """What llama.cpp computes from the blocks: codes * fp16(d) (float32 [out, in])."""
    d = np.asarray(block_d, np.float32).astype(np.float16).astype(np.float32)
    return np.asarray(codes, np.float32) * np.repeat(d, QK_K, axis=1)
