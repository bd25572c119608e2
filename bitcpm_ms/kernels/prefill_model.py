"""The prompt pass of a whole packed ternary model as one C++ op (ops/ternary_matmul/prefill_model.cpp,
AOT name `PrefillModel`).

The MindSpore prefill graph launches ~30 ops per layer and hands every layer's keys and values back to
the host to be written into the cache; at 2 threads MindSpore's own workers spin beside the kernels'
(docs/generation.md). This op runs the valid tokens of every row (right padding dropped) through the
embedding, every layer and the head, and writes the caches itself. Its specification is decoding the
prompt one token at a time: `prefill_model_reference` runs `decode_layer_reference` token by token.

    logits = prefill_model_reference(ids, lengths, spec, embedding, cos, sin, norm_w, head_w, layer_specs,
                                     layers, caches)
    ids [B, C] int32 (right-padded), lengths [B] int32 (1 <= lengths[b] <= min(C, S, P)); the other inputs
    as decode_model_reference's (spec = model_spec(..., steps=0)) -> logits [B, V] float32 at each row's
    last token; slots 0..lengths[b]-1 of row b's caches written in place.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms

from .aot_call import call_aot
from .decode_layer import _rmsnorm, decode_layer_reference
from .decode_model import model_op_arrays
from .library import _load, _raise_kernel
from .ops import _aot
from .reference import float_matmul_nt_reference


def prefill_model_reference(ids, lengths, spec, embedding, cos, sin, norm_w, head_w, layer_specs, layers, caches):
    """The numpy specification (module docstring): each row's tokens decoded in turn, each through every
    layer (decode_layer_reference, write_cache), on views of that row's caches."""
    scale_emb, eps, logit_scale = (float(v) for v in np.ravel(spec)[:3])
    ids = np.asarray(ids)
    out = np.empty((ids.shape[0], np.shape(head_w)[0]), np.float32)
    for b, n in enumerate(np.asarray(lengths)):
        for t in range(int(n)):
            h = (embedding[ids[b, t:t + 1]] * np.float32(scale_emb)).astype(np.float32)    # [1, H]
            pos = np.array([t], np.int32)
            for (norms, projections), (k_cache, v_cache), row in zip(layers, caches, layer_specs):
                h, _, _ = decode_layer_reference(h, norms, projections, k_cache[b:b + 1], v_cache[b:b + 1], pos,
                                                 cos[pos], sin[pos], np.asarray(row, np.float32)[None])
        x = (_rmsnorm(h, norm_w, eps) * np.float32(logit_scale)).astype(np.float32)
        out[b] = float_matmul_nt_reference(x, np.asarray(head_w, np.float32))[0]
    return out


def prefill_model_numpy(ids, lengths, spec, embedding, cos, sin, norm_w, head_w, layer_specs, layers, caches):
    """The AOT entry point `PrefillModel` through ctypes (same signature as the reference); a bad
    argument raises the kernel's error message."""
    arrays = model_op_arrays("PrefillModel", ids, lengths, spec, embedding, cos, sin, norm_w, head_w, layer_specs,
                             layers, caches)
    arrays.append(np.empty((arrays[0].shape[0], arrays[3].shape[0]), np.float32))
    rc = call_aot(_load().PrefillModel, arrays)
    if rc:
        _raise_kernel(rc)
    return arrays[-1]


def prefill_model_op():
    """The AOT op (one per process), inference only: op(ids [B, C], lengths [B], spec, embedding, cos, sin,
    norm_w, head_w, layer_specs, L x 16 layer weights, L x (k_cache, v_cache)) -> logits [B, V] float32."""
    return _aot("PrefillModel", lambda ids, lengths, spec, embedding, *rest: [ids[0], embedding[0]],
                lambda *a: ms.float32)
