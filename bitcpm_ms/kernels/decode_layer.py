"""One whole decoder layer of a packed ternary model for one decode step, as one C++ op
(ops/ternary_matmul/decode_layer.cpp, AOT name `DecodeLayer`).

The decode step of a small model is bound by MindSpore's per-op launch cost, not by its kernels
(docs/generation.md), so the KV-cache decoder (bitcpm_ms/inference/fused_layer.py) runs each layer as
one op. `decode_layer_reference` is the numpy specification, `decode_layer_numpy` calls the AOT entry
point itself through ctypes (so the tests exercise the op's own argument checks), `decode_layer_op`
is the MindSpore primitive.

    h_out, k_rot, v = decode_layer_reference(h, norms, projections, k_cache, v_cache, positions, cos, sin, spec)
    h [B, H] float32; norms = (w_attn_norm [H], w_ffn_norm [H]);
    projections = 7 PackedTernary in the order wq, wk, wv, wo, w1 (gate), w3 (up), w2 (down);
    caches [B, KVH, S, D] (rotated keys; float32, or both float16: stores round to nearest even); positions [B] int32; cos/sin [B, D] at each row's position;
    spec = layer_spec(...) float32 [1, 8] -> h_out [B, H], k_rot [B, KVH*D], v [B, KVH*D]
"""
from __future__ import annotations

import numpy as np
import mindspore as ms

from .aot_call import call_aot, prepared_aot_call
from .library import _load, _raise_kernel, cache_array
from .ops import _aot
from .reference import decode_attention_reference, ternary_matmul_reference

PROJECTIONS = ("wq", "wk", "wv", "wo", "w1", "w3", "w2")


def layer_spec(eps_attn: float, eps_ffn: float, residual_scale: float, attn_scale: float, num_heads: int,
               act_bits, a8_eps: float, write_cache: bool = False) -> np.ndarray:
    """The op's constant input [1, 8] float32 (act_bits None -> 0, i.e. weight-only). write_cache: the
    op also stores the new key/value into slot positions[b] of the caches, in place (multi-step decode)."""
    return np.array([[eps_attn, eps_ffn, residual_scale, attn_scale, num_heads, act_bits or 0, a8_eps,
                      1.0 if write_cache else 0.0]], np.float32)


def _rmsnorm(x, w, eps):
    """MindFormers' LlamaRMSNorm in float32: x * (1 / sqrt(mean(x^2) + eps)) * w."""
    r = np.float32(1.0) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps))
    return (x * r * w).astype(np.float32)


def decode_layer_reference(h, norms, projections, k_cache, v_cache, positions, cos, sin, spec):
    """The numpy specification (see the module docstring and decode_layer.cpp for the formula). With
    write_cache set in spec, k_cache / v_cache (numpy arrays) get the new key/value at slot positions[b]."""
    eps_attn, eps_ffn, res_scale, attn_scale, heads, act_bits, a8_eps, write = (float(v) for v in np.ravel(spec))
    act = 8 if int(act_bits) == 8 else None
    assert int(heads) * k_cache.shape[3] == np.shape(h)[1], "heads * head_dim must equal the hidden size"
    wq, wk, wv, wo, w1, w3, w2 = projections

    def mm(x, p):
        return ternary_matmul_reference(np.asarray(x, np.float32), p, act, a8_eps)

    h = np.asarray(h, np.float32)
    x = _rmsnorm(h, norms[0], eps_attn)
    q, k, v = mm(x, wq), mm(x, wk), mm(x, wv)
    ctx, k_rot = decode_attention_reference(q, k, v, k_cache, v_cache, positions, cos, sin, attn_scale)
    if write:
        kvh, slots, d = k_cache.shape[1:]
        for b, p in enumerate(np.asarray(positions)):
            if p < slots:
                k_cache[b, :, p] = np.reshape(k_rot[b], (kvh, d))
                v_cache[b, :, p] = np.reshape(v[b], (kvh, d))
    h1 = h + mm(ctx, wo) * np.float32(res_scale)
    x2 = _rmsnorm(h1, norms[1], eps_ffn)
    gate, up = mm(x2, w1), mm(x2, w3)
    act_out = (gate / (np.float32(1.0) + np.exp(-gate)) * up).astype(np.float32)
    h_out = h1 + mm(act_out, w2) * np.float32(res_scale)
    return h_out.astype(np.float32), k_rot, v


def layer_weight_arrays(norms, projections):
    """A layer's 16 weight inputs of DecodeLayer (and of each layer of DecodeModel), contiguous: the two
    RMSNorm weights float32, then (packed uint8, scales float32) of the seven projections."""
    arrays = [np.ascontiguousarray(norms[0], np.float32), np.ascontiguousarray(norms[1], np.float32)]
    for p in projections:
        arrays += [np.ascontiguousarray(p.packed, np.uint8), np.ascontiguousarray(p.scales, np.float32)]
    return arrays


def _op_arrays(h, norms, projections, k_cache, v_cache, positions, cos, sin, spec):
    """The op's inputs then its (empty) outputs, as contiguous numpy arrays of the op's dtypes."""
    inputs = [np.ascontiguousarray(h, np.float32)] + layer_weight_arrays(norms, projections)
    inputs += [cache_array(k_cache), cache_array(v_cache), np.ascontiguousarray(positions, np.int32), np.ascontiguousarray(cos, np.float32),
               np.ascontiguousarray(sin, np.float32), np.ascontiguousarray(spec, np.float32)]
    bsz, kv = inputs[0].shape[0], projections[1].out_features
    return inputs + [np.empty_like(inputs[0]), np.empty((bsz, kv), np.float32), np.empty((bsz, kv), np.float32)]


def decode_layer_numpy(h, norms, projections, k_cache, v_cache, positions, cos, sin, spec):
    """The AOT entry point `DecodeLayer` called through ctypes with numpy arrays (same signature as
    the reference); a bad argument raises the kernel's error message."""
    arrays = _op_arrays(h, norms, projections, k_cache, v_cache, positions, cos, sin, spec)
    rc = call_aot(_load().DecodeLayer, arrays)
    if rc:
        _raise_kernel(rc)
    return tuple(arrays[-3:])


def prepared_decode_layer(h, norms, projections, k_cache, v_cache, positions, cos, sin, spec):
    """(run, outputs): run() calls DecodeLayer on these arrays with its ctypes arguments built once
    and returns the kernel's code; outputs are the arrays it writes. For timing the op alone."""
    arrays = _op_arrays(h, norms, projections, k_cache, v_cache, positions, cos, sin, spec)
    return prepared_aot_call(_load().DecodeLayer, arrays), tuple(arrays[-3:])


def decode_layer_op():
    """The AOT op (one per process), inference only (no bprop):
    op(h, w_attn_norm, w_ffn_norm, 7 x (packed, scales), k_cache, v_cache, positions, cos, sin, spec)
    -> (h_out [B, H], k_rot [B, KVH*D], v [B, KVH*D])."""

    def out_shape(h, *rest):
        kv = rest[4][0]                       # wk packed [KVH*D, H/4]
        return h, [h[0], kv], [h[0], kv]

    return _aot("DecodeLayer", out_shape, lambda *a: (ms.float32, ms.float32, ms.float32))
