"""The C++ kernel library through ctypes: loading, settings, and the numpy routes.

``ternary_matmul_numpy(x, packed, act_bits=None, eps=1e-5)``: numpy in -> numpy out (no MindSpore
needed). ``eps`` is the A8 activation quantizer's floor, s = 127 / max(max|x_row|, eps): pass the
QuantConfig.eps the model was trained with. The MindSpore AOT ops over the same library are in
``ops.py``; ``api.ternary_matmul`` accepts either kind of input.

Settings shared by both routes (they live in the loaded library, which MindSpore's AOT loader and
ctypes share: the same path is dlopen'ed once per process):
  ``set_num_threads(n)``  threads over output rows (default: env BITCPM_MS_NUM_THREADS, else all cores)
  ``set_force_portable(True)`` / ``portable_path()`` context: disable every SIMD path.
  ``set_max_isa(MAX_ISA_AVX2)`` / ``isa_path(level)`` context: cap the kernels at AVX2+FMA (no
  AVX-512), e.g. to test or time the AVX2 path on an AVX-512 machine; ``MAX_ISA_BEST`` lifts the cap.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import os
import threading

import numpy as np

from .build import library_path
from .packing import PackedTernary, check_packed_group

_lib = None
_lib_lock = threading.Lock()


def _load():
    global _lib
    if _lib is not None:
        return _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL(str(library_path()))
            i64, i32 = ctypes.c_int64, ctypes.c_int
            vp = ctypes.c_void_p
            lib.bitcpm_ternary_matmul.argtypes = [vp, vp, vp, vp, i64, i64, i64, i64, i32, ctypes.c_float, i32, i32]
            lib.bitcpm_ternary_matmul.restype = i32
            lib.bitcpm_ternary_matmul_dx.argtypes = [vp, vp, vp, vp, i64, i64, i64, i64, i32]
            lib.bitcpm_ternary_matmul_dx.restype = i32
            lib.bitcpm_quantize_pack.argtypes = [vp, i64, i64, i64, ctypes.c_float, vp, vp, i32]
            lib.bitcpm_quantize_pack.restype = i32
            lib.bitcpm_last_error.restype = ctypes.c_char_p
            lib.bitcpm_quantize_activations.argtypes = [vp, i64, i64, ctypes.c_float, vp, vp, i32]
            lib.bitcpm_quantize_activations.restype = i32
            for f in ("bitcpm_set_num_threads", "bitcpm_set_force_portable", "bitcpm_set_max_isa",
                      "bitcpm_set_spin_us"):
                getattr(lib, f).argtypes = [i32]
            env = os.environ.get("BITCPM_MS_NUM_THREADS")
            if env:
                lib.bitcpm_set_num_threads(int(env))
            env = os.environ.get("BITCPM_MS_SPIN_US")
            if env:
                lib.bitcpm_set_spin_us(int(env))
            _lib = lib
    return _lib


def set_num_threads(n: int) -> int:
    """Threads used by the kernels (n <= 0: all cores). Returns the effective count."""
    return int(_load().bitcpm_set_num_threads(int(n)))


def get_num_threads() -> int:
    return int(_load().bitcpm_get_num_threads())


def set_spin_us(us: int) -> int:
    """How long (microseconds) an idle kernel thread, or the thread waiting for it, polls for news inside
    a decode op before it sleeps (env BITCPM_MS_SPIN_US; default 1000; 0: never poll). Polling saves the
    ~50 us wake-up of a sleeping thread per parallel region; on a machine with more runnable threads than
    cores it costs up to this much per wait instead. Results do not depend on it. Returns the setting."""
    return int(_load().bitcpm_set_spin_us(int(us)))


def get_spin_us() -> int:
    return int(_load().bitcpm_get_spin_us())


def set_force_portable(flag: bool) -> None:
    """Force the portable C++ path (no AVX2) for all later calls, including the MindSpore op."""
    _load().bitcpm_set_force_portable(1 if flag else 0)


def get_force_portable() -> bool:
    return bool(_load().bitcpm_get_force_portable())


def has_avx2() -> bool:
    return bool(_load().bitcpm_has_avx2())


def has_avx512_vnni() -> bool:
    """Whether the CPU has avx512f + avx512bw + avx512vnni (the VNNI A8 kernels)."""
    return bool(_load().bitcpm_has_avx512_vnni())


MAX_ISA_BEST = 0  # the kernels use the best instruction set the CPU has
MAX_ISA_AVX2 = 1  # at most AVX2+FMA: every AVX-512 path off


def set_max_isa(level: int) -> None:
    """Cap the instruction set of all later calls, including the MindSpore op (MAX_ISA_BEST or
    MAX_ISA_AVX2). `set_force_portable(True)` still wins over any level."""
    if level not in (MAX_ISA_BEST, MAX_ISA_AVX2):
        raise ValueError(f"max ISA level must be MAX_ISA_BEST (0) or MAX_ISA_AVX2 (1), got {level!r}")
    _load().bitcpm_set_max_isa(int(level))


def get_max_isa() -> int:
    return int(_load().bitcpm_get_max_isa())


@contextlib.contextmanager
def portable_path(flag: bool = True):
    old = get_force_portable()
    set_force_portable(flag)
    try:
        yield
    finally:
        set_force_portable(old)


@contextlib.contextmanager
def isa_path(level: int):
    """``with isa_path(MAX_ISA_AVX2):`` runs the enclosed calls with the ISA capped, then restores."""
    old = get_max_isa()
    set_max_isa(level)
    try:
        yield
    finally:
        set_max_isa(old)


def _is_ms_tensor(x) -> bool:
    return type(x).__module__.startswith("mindspore") and hasattr(x, "asnumpy")


def _check_mode(act_bits, eps):
    if act_bits not in (None, 8):
        raise ValueError(f"act_bits must be None (weight-only) or 8 (W1.58A8), got {act_bits!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (0 < eps and math.isfinite(eps)):
        raise ValueError(f"eps (activation quantizer floor) must be a positive finite number, got {eps!r}")


def _check(x_shape, x_dtype, packed: PackedTernary, act_bits, eps):
    if not isinstance(packed, PackedTernary):
        raise ValueError(f"packed must be a PackedTernary, got {type(packed).__name__}")
    packed.validate()
    _check_mode(act_bits, eps)
    if str(x_dtype) not in ("float32", "Float32"):
        raise ValueError(f"x must be float32, got {x_dtype}")
    if len(x_shape) < 1 or x_shape[-1] != packed.in_features:
        raise ValueError(f"x last dimension must be in_features={packed.in_features}, got shape {tuple(x_shape)}")


def _raise_kernel(rc):
    msg = _load().bitcpm_last_error().decode(errors="replace")
    raise ValueError(f"ternary matmul kernel failed (code {rc}): {msg}")


def ternary_matmul_numpy(x: np.ndarray, packed: PackedTernary, act_bits=None, eps: float = 1e-5, *,
                         num_threads: int = 0, force_portable: bool = False) -> np.ndarray:
    """ctypes route: x float32 [..., K] -> y float32 [..., N]."""
    x = np.asarray(x)
    _check(x.shape, x.dtype, packed, act_bits, eps)
    lib = _load()
    N, K = packed.shape
    lead = x.shape[:-1]
    x2 = np.ascontiguousarray(x.reshape(-1, K))
    M = x2.shape[0]
    w = np.ascontiguousarray(packed.packed)
    s = np.ascontiguousarray(packed.scales)
    y = np.empty((M, N), np.float32)
    rc = lib.bitcpm_ternary_matmul(x2.ctypes.data, w.ctypes.data, s.ctypes.data, y.ctypes.data, M, K, N,
                                   s.shape[1], 8 if act_bits == 8 else 0, float(eps), int(num_threads),
                                   int(bool(force_portable)))
    if rc:
        _raise_kernel(rc)
    return y.reshape(*lead, N)


def quantize_activations_numpy(x: np.ndarray, eps: float = 1e-5, portable: bool = False):
    """ctypes route of the A8 kernels' activation quantizer (reference: quantize_activations_int8):
    x float32 [M, K] -> (xq int8 [M, K], s float32 [M]). portable: the portable loop instead of the SIMD one."""
    x = np.ascontiguousarray(x, np.float32)
    xq, s = np.empty(x.shape, np.int8), np.empty(x.shape[0], np.float32)
    rc = _load().bitcpm_quantize_activations(x.ctypes.data, x.shape[0], x.shape[1], float(eps), xq.ctypes.data,
                                             s.ctypes.data, int(bool(portable)))
    if rc:
        _raise_kernel(rc)
    return xq, s


def ternary_matmul_dx_numpy(dy: np.ndarray, packed: PackedTernary, num_threads: int = 0) -> np.ndarray:
    """ctypes route of the backward: dx = dy @ W_q."""
    dy = np.ascontiguousarray(np.asarray(dy, np.float32))
    N, K = packed.shape
    if dy.ndim != 2 or dy.shape[1] != N:
        raise ValueError(f"dy must be [M, {N}], got {dy.shape}")
    dx = np.empty((dy.shape[0], K), np.float32)
    w = np.ascontiguousarray(packed.packed)
    s = np.ascontiguousarray(packed.scales)
    rc = _load().bitcpm_ternary_matmul_dx(dy.ctypes.data, w.ctypes.data, s.ctypes.data, dx.ctypes.data,
                                          dy.shape[0], K, N, s.shape[1], int(num_threads))
    if rc:
        _raise_kernel(rc)
    return dx


def quantize_pack_numpy(w: np.ndarray, group_size: int, eps: float = 1e-5, num_threads: int = 0) -> PackedTernary:
    """C++ one-pass ternary quantize + pack of a latent float32 weight [out, in] (s = max(mean|W_g|, eps)).

    The first half of a fused training forward; used by the benchmark. The group mean is summed in
    double, so a scale may differ from numpy's float32 mean (quantize_weight) in the last bit."""
    w = np.ascontiguousarray(np.asarray(w))
    if w.dtype != np.float32 or w.ndim != 2:
        raise ValueError(f"w must be a float32 2-D array, got {w.dtype} {w.shape}")
    N, K = w.shape
    g = check_packed_group(K, group_size)
    packed = np.empty((N, K // 4), np.uint8)
    scales = np.empty((N, K // g), np.float32)
    rc = _load().bitcpm_quantize_pack(w.ctypes.data, N, K, K // g, float(eps), packed.ctypes.data,
                                      scales.ctypes.data, int(num_threads))
    if rc:
        _raise_kernel(rc)
    return PackedTernary(packed, scales, int(group_size), (N, K))


# --- the KV-cache decoder's float kernels (decode_ops.cpp); specs in reference.py ---


def cache_array(c) -> np.ndarray:
    """A KV cache as the decode kernels take it: a float16 cache as is (float16 C-contiguous), anything
    else as float32 C-contiguous (the same array when it already is)."""
    dtype = np.float16 if np.asarray(c).dtype == np.float16 else np.float32
    return np.ascontiguousarray(c, dtype)


def decode_attention_numpy(q, k, v, k_cache, v_cache, positions, cos, sin, scale, num_threads: int = 0):
    """The C++ kernel through ctypes (float32 arrays, positions int32; the caches float32 or both float16)."""
    arrays = [np.ascontiguousarray(a, np.float32) for a in (q, k, v)] + [cache_array(c) for c in (k_cache, v_cache)]
    if arrays[3].dtype != arrays[4].dtype:
        raise ValueError(f"the k and v caches differ in dtype ({arrays[3].dtype} and {arrays[4].dtype})")
    pos = np.ascontiguousarray(positions, np.int32)
    cos, sin = (np.ascontiguousarray(a, np.float32) for a in (cos, sin))
    bsz, kvh, seq, d = arrays[3].shape
    h = arrays[0].shape[1] // d
    ctx = np.empty((bsz, h * d), np.float32)
    k_rot = np.empty((bsz, kvh * d), np.float32)
    lib = _load()
    fn = lib.bitcpm_decode_attention
    fn.restype = ctypes.c_int
    i64, vp = ctypes.c_int64, ctypes.c_void_p
    fn.argtypes = [vp] * 5 + [ctypes.c_int] + [vp] * 3 + [ctypes.c_float, i64, i64, i64, i64, i64, vp, vp,
                                                          ctypes.c_int]
    rc = fn(*(a.ctypes.data for a in arrays), int(arrays[3].dtype == np.float16), pos.ctypes.data, cos.ctypes.data,
            sin.ctypes.data, float(scale), bsz, h, kvh, seq, d, ctx.ctypes.data, k_rot.ctypes.data, int(num_threads))
    if rc:
        _raise_kernel(rc)
    return ctx, k_rot


def exp_shifted_numpy(x, shift: float = 0.0) -> np.ndarray:
    """The attention softmax's exp(x - shift) (decode_ops.cpp, exp_softmax) through ctypes, float32."""
    out = np.array(x, np.float32, order="C", copy=True)
    fn = _load().bitcpm_exp_shifted
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_float]
    fn(out.ctypes.data, out.size, float(shift))
    return out


def silu_mul_numpy(gate, up) -> np.ndarray:
    """SwiGLU's silu(gate) * up as the decode and prefill ops compute it (silu_mul), through ctypes."""
    out = np.array(gate, np.float32, order="C", copy=True)
    up = np.ascontiguousarray(up, np.float32)
    if up.shape != out.shape:
        raise ValueError(f"gate {out.shape} and up {up.shape} differ in shape")
    fn = _load().bitcpm_silu_mul
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn(out.ctypes.data, up.ctypes.data, out.size)
    return out


def float_to_half_numpy(x) -> np.ndarray:
    """The kernels' float32 -> float16 rounding (the float16 KV cache's stores) through ctypes."""
    x = np.ascontiguousarray(x, np.float32)
    out = np.empty(x.shape, np.float16)
    fn = _load().bitcpm_float_to_half
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    fn(x.ctypes.data, out.ctypes.data, x.size)
    return out


def float_matmul_nt_numpy(x, w, num_threads: int = 0):
    """The C++ kernel through ctypes; w float32, or float16 (the half-precision head)."""
    x = np.ascontiguousarray(x, np.float32)
    half = np.asarray(w).dtype == np.float16
    w = np.ascontiguousarray(w, np.float16 if half else np.float32)
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[1]:
        raise ValueError(f"need x [M, K] and w [N, K], got {x.shape} and {w.shape}")
    y = np.empty((x.shape[0], w.shape[0]), np.float32)
    fn = _load().bitcpm_half_matmul_nt if half else _load().bitcpm_float_matmul_nt
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    rc = fn(x.ctypes.data, w.ctypes.data, y.ctypes.data, x.shape[0], x.shape[1], w.shape[0], int(num_threads))
    if rc:
        _raise_kernel(rc)
    return y
