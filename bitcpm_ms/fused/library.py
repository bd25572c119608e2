"""The fused training kernel library (``ops/fused_train/``) through ctypes: loading, settings, and
``call_kernel`` which runs one AOT entry point on numpy arrays (the route the numerics tests and
the benchmarks use; MindSpore's AOT loader dlopens the same file, so the settings here apply to
the MindSpore ops too).

BLAS: the Linear matmul kernels (``blas_matmul.cpp``) call OpenBLAS's sgemm from the
scipy-openblas32 wheel (a dependency of bitcpm-ms), loaded here by path; ``blas_problem()`` says
why it is unavailable (then the matmul fusion is not applied).

Settings:
  ``set_num_threads(n)``   threads of the fused kernels (default: env BITCPM_MS_NUM_THREADS, else all cores)
  ``set_max_isa(level)`` / ``isa_path(level)``: cap the instruction set (ISA_BEST, ISA_AVX2, ISA_PORTABLE)
  ``isa_name()``           the kernel table in use ("avx512", "avx2" or "portable")
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from typing import Sequence

import numpy as np

from ..kernels.aot_call import call_aot
from ..kernels.build import FUSED_TRAIN, library_path
from .errors import FusedOpError

ISA_BEST, ISA_AVX2, ISA_PORTABLE = 0, 1, 2

_lib = None
_lock = threading.Lock()
_blas = {"problem": "not loaded yet"}
_DTYPES = {np.dtype(np.float32): b"float32", np.dtype(np.int32): b"int32"}


def path() -> str:
    return str(library_path(FUSED_TRAIN))


def load():
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            lib = ctypes.CDLL(path())
            for f in ("bitcpm_fused_set_num_threads", "bitcpm_fused_set_max_isa"):
                getattr(lib, f).argtypes = [ctypes.c_int]
            lib.bitcpm_fused_isa_name.restype = ctypes.c_char_p
            lib.bitcpm_fused_last_error.restype = ctypes.c_char_p
            lib.bitcpm_fused_set_blas.argtypes = [ctypes.c_char_p]
            env = os.environ.get("BITCPM_MS_NUM_THREADS")
            if env:
                lib.bitcpm_fused_set_num_threads(int(env))
            _blas["problem"] = _load_blas(lib)
            _lib = lib
    return _lib


def _load_blas(lib):
    """Give the kernel library OpenBLAS (scipy-openblas32); returns None or why not."""
    try:
        import scipy_openblas32
    except ImportError:
        return "scipy-openblas32 is not installed (pip install scipy-openblas32)"
    blas = os.path.join(scipy_openblas32.get_lib_dir(), f"lib{scipy_openblas32.get_library()}.so")
    if lib.bitcpm_fused_set_blas(blas.encode()) != 0:
        return lib.bitcpm_fused_last_error().decode(errors="replace")
    return None


def blas_problem():
    """None when the BLAS-backed Linear matmuls can run, else why not."""
    load()
    return _blas["problem"]


def set_num_threads(n: int) -> int:
    """Threads of the fused kernels (n <= 0: all cores). Returns the effective count."""
    return int(load().bitcpm_fused_set_num_threads(int(n)))


def get_num_threads() -> int:
    return int(load().bitcpm_fused_get_num_threads())


def set_max_isa(level: int) -> None:
    if level not in (ISA_BEST, ISA_AVX2, ISA_PORTABLE):
        raise ValueError(f"max ISA level must be ISA_BEST (0), ISA_AVX2 (1) or ISA_PORTABLE (2), got {level!r}")
    load().bitcpm_fused_set_max_isa(int(level))


def get_max_isa() -> int:
    return int(load().bitcpm_fused_get_max_isa())


def isa_name() -> str:
    return load().bitcpm_fused_isa_name().decode()


@contextlib.contextmanager
def isa_path(level: int):
    """``with isa_path(ISA_PORTABLE):`` runs the enclosed calls on that path, then restores."""
    old = get_max_isa()
    set_max_isa(level)
    try:
        yield isa_name()
    finally:
        set_max_isa(old)


def call_kernel(name: str, inputs: Sequence[np.ndarray], output_shapes: Sequence[tuple]):
    """Run AOT entry point `name` on numpy inputs; returns the float32 outputs (a list).

    Inputs must be float32 or int32 (copied to contiguous arrays). A kernel error raises
    FusedOpError with the kernel's message."""
    arrays = [np.ascontiguousarray(x) for x in inputs]
    for i, a in enumerate(arrays):
        if a.dtype not in _DTYPES:
            raise FusedOpError(f"{name}: input {i} must be float32 or int32, got {a.dtype}")
    outs = [np.empty(s, np.float32) for s in output_shapes]
    rc = call_aot(getattr(load(), name), arrays + outs)
    if rc:
        raise FusedOpError(f"{name} failed (code {rc}): {load().bitcpm_fused_last_error().decode(errors='replace')}")
    return outs
