"""K greedy decode steps of a whole packed ternary model as one C++ op
(ops/ternary_matmul/decode_model.cpp, AOT name `DecodeModel`).

The multi-step decode graph with one DecodeLayer op per layer still launches ~L + 6 MindSpore ops per
token, and MindSpore's CPU runtime costs tens of microseconds per op: more than a third of a ~100M
model's token, most of a tiny model's (docs/generation.md). This op runs the embedding, every layer,
the final norm, the head and the argmax of all K steps, so a graph call is one op.
`decode_model_reference` is the numpy specification, `decode_model_numpy` calls the AOT entry point
through ctypes (the tests exercise the op's own argument checks), `decode_model_op` is the primitive.

    tokens = decode_model_reference(ids, positions, spec, embedding, cos, sin, norm_w, head_w,
                                    layer_specs, layers, caches)
    ids [B, 1] int32, positions [B] int32; spec = model_spec(...) [1, 8]; embedding [V, H] float32;
    cos / sin [P, D] (the model's rotary tables); norm_w [H]; head_w [V, H] float32 or float16;
    layer_specs [L, 8] (layer_spec rows with write_cache); layers = L (norms, projections) as
    decode_layer_reference takes them; caches = L (k, v) [B, KVH, S, D], all float32 or all float16,
    written in place
    -> tokens [B, K] int32. Step j runs at min(positions + j, S - 1).
"""
from __future__ import annotations

import numpy as np
import mindspore as ms

from .aot_call import call_aot
from .decode_layer import _rmsnorm, decode_layer_reference, layer_weight_arrays
from .library import _load, _raise_kernel
from .ops import _aot
from .reference import float_matmul_nt_reference


def model_spec(scale_emb: float, norm_eps: float, logit_scale: float, steps: int) -> np.ndarray:
    """The op's model constants [1, 8] float32: embedding scale (MiniCPM's scale_emb), the final
    RMSNorm's eps, the scale after it (MiniCPM's dim_model_base / hidden) and the steps per call."""
    return np.array([[scale_emb, norm_eps, logit_scale, steps, 0, 0, 0, 0]], np.float32)


def decode_model_reference(ids, positions, spec, embedding, cos, sin, norm_w, head_w, layer_specs, layers, caches):
    """The numpy specification (see the module docstring); writes the caches like the op."""
    scale_emb, eps, logit_scale, steps = (float(v) for v in np.ravel(spec)[:4])
    ids = np.asarray(ids, np.int64).reshape(-1)
    positions = np.asarray(positions, np.int64)
    last = caches[0][0].shape[2] - 1
    tokens = np.empty((ids.size, int(steps)), np.int32)
    for j in range(int(steps)):
        pos = np.minimum(positions + j, last).astype(np.int32)
        h = (embedding[ids] * np.float32(scale_emb)).astype(np.float32)
        for (norms, projections), (k_cache, v_cache), row in zip(layers, caches, layer_specs):
            h, _, _ = decode_layer_reference(h, norms, projections, k_cache, v_cache, pos, cos[pos], sin[pos],
                                             np.asarray(row, np.float32)[None])
        x = (_rmsnorm(h, norm_w, eps) * np.float32(logit_scale)).astype(np.float32)
        ids = np.argmax(float_matmul_nt_reference(x, np.asarray(head_w, np.float32)), axis=-1)
        tokens[:, j] = ids
    return tokens


def model_op_arrays(op, ids, positions, spec, embedding, cos, sin, norm_w, head_w, layer_specs, layers, caches):
    """The inputs of a whole-model op (DecodeModel, PrefillModel), contiguous, in the op's dtypes; the
    caches are the callers' arrays (written in place), so they must already be contiguous."""
    f32 = lambda a: np.ascontiguousarray(a, np.float32)
    head = np.ascontiguousarray(head_w) if np.asarray(head_w).dtype == np.float16 else f32(head_w)
    arrays = [np.ascontiguousarray(ids, np.int32), np.ascontiguousarray(positions, np.int32), f32(spec),
              f32(embedding), f32(cos), f32(sin), f32(norm_w), head, f32(layer_specs)]
    for norms, projections in layers:
        arrays += layer_weight_arrays(norms, projections)
    for k_cache, v_cache in caches:
        for c in (k_cache, v_cache):
            if c.dtype not in (np.float32, np.float16) or not c.flags.c_contiguous:
                raise ValueError(f"{op} writes the caches in place: they must be C-contiguous float32 or "
                                 f"float16 arrays, got {c.dtype}")
            arrays.append(c)
    return arrays


def _op_arrays(ids, positions, spec, embedding, cos, sin, norm_w, head_w, layer_specs, layers, caches):
    """DecodeModel's inputs then its (empty) output."""
    arrays = model_op_arrays("DecodeModel", ids, positions, spec, embedding, cos, sin, norm_w, head_w, layer_specs,
                             layers, caches)
    return arrays + [np.empty((arrays[0].shape[0], int(np.ravel(spec)[3])), np.int32)]


def decode_model_numpy(ids, positions, spec, embedding, cos, sin, norm_w, head_w, layer_specs, layers, caches):
    """The AOT entry point `DecodeModel` through ctypes (same signature as the reference); a bad
    argument raises the kernel's error message."""
    arrays = _op_arrays(ids, positions, spec, embedding, cos, sin, norm_w, head_w, layer_specs, layers, caches)
    rc = call_aot(_load().DecodeModel, arrays)
    if rc:
        _raise_kernel(rc)
    return arrays[-1]


def decode_model_op(steps: int):
    """The AOT op for `steps` tokens per call (one per steps value and process), inference only:
    op(ids, positions, spec, embedding, cos, sin, norm_w, head_w, layer_specs, L x 16 layer weights,
    L x (k_cache, v_cache)) -> tokens [B, steps] int32."""
    steps = int(steps)
    return _aot("DecodeModel", lambda ids, *rest: [ids[0], steps], lambda *a: ms.int32, key=("DecodeModel", steps))
