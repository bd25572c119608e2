"""Call a MindSpore AOT entry point (`int F(nparam, params, ndims, shapes, dtypes, stream, extra)`)
directly through ctypes on numpy arrays: the route the numerics tests use to check an op's own C++
argument handling without building a graph. Shared by both kernel libraries."""
from __future__ import annotations

import ctypes
from typing import Sequence

import numpy as np

AOT_DTYPES = {np.dtype(np.float32): b"float32", np.dtype(np.float16): b"float16", np.dtype(np.int32): b"int32",
              np.dtype(np.uint8): b"uint8"}


def call_aot(fn, arrays: Sequence[np.ndarray]) -> int:
    """fn(inputs then outputs, as MindSpore passes them); arrays must be C-contiguous with dtypes in
    AOT_DTYPES (outputs are written in place). Returns the function's code (0 = success)."""
    return prepared_aot_call(fn, arrays)()


def prepared_aot_call(fn, arrays: Sequence[np.ndarray]):
    """A no-argument callable running fn on `arrays` (see call_aot), its ctypes arguments built once:
    the route benchmarks use to time an op without Python argument marshalling (~0.3 ms for the 23
    arguments of DecodeLayer). The arrays must stay alive and in place while it is used."""
    n = len(arrays)
    params = (ctypes.c_void_p * n)(*[a.ctypes.data for a in arrays])
    ndims = (ctypes.c_int * n)(*[a.ndim for a in arrays])
    shape_arrays = [(ctypes.c_int64 * max(a.ndim, 1))(*a.shape) for a in arrays]
    shapes = (ctypes.POINTER(ctypes.c_int64) * n)(*[ctypes.cast(s, ctypes.POINTER(ctypes.c_int64))
                                                    for s in shape_arrays])
    dtypes = (ctypes.c_char_p * n)(*[AOT_DTYPES[a.dtype] for a in arrays])
    n_arg = ctypes.c_int(n)

    def run() -> int:
        return int(fn(n_arg, params, ndims, shapes, dtypes, None, None))
    run.buffers = (list(arrays), shape_arrays)      # keeps alive what the pointers refer to
    return run
