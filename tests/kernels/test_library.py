"""C++ kernels (ctypes route) vs the numpy reference."""
import ctypes

import numpy as np
import pytest

from bitcpm_ms import kernels as K_
from bitcpm_ms.kernels import (MAX_ISA_AVX2, MAX_ISA_BEST, get_max_isa, has_avx2, has_avx512_vnni, isa_path,
                               pack_ternary, portable_path, quantize_activations_int8, set_max_isa, ternary_matmul,
                               ternary_matmul_dx_numpy, ternary_matmul_dx_reference, ternary_matmul_numpy,
                               ternary_matmul_reference)

from .conftest import make_packed


# Code paths: portable C++, AVX2 (AVX-512 disabled with set_max_isa(MAX_ISA_AVX2)), best available
# (the AVX-512 VNNI path for A8 where the CPU has it).
ISA_PATHS = ["portable"] + (["avx2"] if has_avx2() else []) + (["vnni"] if has_avx512_vnni() else [])


def run_path(x, p, act_bits, path, num_threads=0, eps=1e-5):
    with isa_path(MAX_ISA_AVX2 if path == "avx2" else MAX_ISA_BEST):
        return ternary_matmul_numpy(x, p, act_bits, eps, num_threads=num_threads, force_portable=path == "portable")


def c_library():
    """The library's C entry points, declared here from their documented C signatures."""
    lib = ctypes.CDLL(str(K_.library_path()))
    i64, i32, vp = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    # x, packed, scales, y, M, K, N, G, act_bits, eps, nthreads, force_portable
    lib.bitcpm_ternary_matmul.argtypes = [vp, vp, vp, vp, i64, i64, i64, i64, i32, ctypes.c_float, i32, i32]
    lib.bitcpm_ternary_matmul.restype = i32
    lib.bitcpm_last_error.restype = ctypes.c_char_p
    return lib


def _cases():
    for K in (32, 96, 256, 4096):
        for g in sorted({-1, 32, 64, 128, K}):
            if g != -1 and K % g:
                continue
            yield K, g


def _bound(x, p, act_bits):
    """Error bound: float32 rounding relative to sum |x_k| |W_nk| (per output)."""
    xa = np.abs(x.astype(np.float64))
    if act_bits == 8:
        xq, s = quantize_activations_int8(x)
        xa = np.abs(xq.astype(np.float64)) / s[:, None]
    return 2e-6 * (xa @ np.abs(p.dequantize().astype(np.float64)).T) + 1e-7


@pytest.mark.parametrize("path", ISA_PATHS)
@pytest.mark.parametrize("act_bits", [None, 8], ids=["w", "a8"])
@pytest.mark.parametrize("K,g", list(_cases()))
def test_matches_reference(K, g, act_bits, path):
    rng = np.random.default_rng(K * 7 + g)
    Ms, Ns = ((1, 3), (1, 5)) if K == 4096 else ((1, 3, 17), (1, 5, 64))
    for N in Ns:
        p, _, _ = make_packed(rng, N, K, g)
        for M in Ms:
            x = rng.standard_normal((M, K)).astype(np.float32)
            ref = ternary_matmul_reference(x, p, act_bits)
            y1 = run_path(x, p, act_bits, path, num_threads=1)
            y2 = run_path(x, p, act_bits, path, num_threads=2)
            assert y1.shape == (M, N) and y1.dtype == np.float32
            np.testing.assert_array_equal(y1, y2)  # thread count does not change a single bit
            err = np.abs(y1.astype(np.float64) - ref)
            assert np.all(err <= _bound(x, p, act_bits)), (M, N, float(err.max()))


@pytest.mark.parametrize("path", ISA_PATHS)
@pytest.mark.parametrize("M", [1, 2, 5])
@pytest.mark.parametrize("K,g", [(96, 32), (256, 64), (384, 64), (384, 128), (384, 192), (512, -1), (640, 128), (4096, 128),
                                 (4096, -1)])
def test_a8_integer_part_exact(K, g, M, path):
    """With s_token = 1 (row absmax 127, integer x) and power-of-two scales every float step is exact,
    so the kernel must equal the exact integer result bit for bit."""
    rng = np.random.default_rng(K)
    N = 37
    p, codes, scales = make_packed(rng, N, K, g, pow2_scales=True)
    x = rng.integers(-127, 128, size=(max(M, 5), K)).astype(np.float32)
    x[:, 0] = 127.0
    x[1, :] = -128.0  # clipping: s = 127/128, still exercises the -128 boundary after rounding
    x = x[:M]
    y = run_path(x, p, 8, path)
    xq, s = quantize_activations_int8(x)
    gg = K if g == -1 else g
    isum = (xq.astype(np.int64).reshape(M, 1, K // gg, gg) * codes.astype(np.int64).reshape(1, N, K // gg, gg)).sum(-1)
    exact = (isum * scales[None].astype(np.float64)).sum(-1) / s[:, None].astype(np.float64)
    rows = [r for r in (0, 2, 3, 4) if r < M]  # rows with s == 1: exact
    np.testing.assert_array_equal(y[rows], exact[rows].astype(np.float32))
    if M > 1:
        np.testing.assert_allclose(y[1], exact[1], rtol=1e-6)
    np.testing.assert_array_equal(y[rows], ternary_matmul_reference(x, p, 8)[rows])


def test_a8_quantizer_matches_training_quantizer():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((6, 64)) * np.array([1e-7, 1e-3, 1, 10, 1e3, 0.5])[:, None]).astype(np.float32)
    xq, s = quantize_activations_int8(x)
    s_ref = (np.float32(127) / np.maximum(np.abs(x).max(1), np.float32(1e-5))).astype(np.float32)
    np.testing.assert_array_equal(s, s_ref)
    np.testing.assert_array_equal(xq, np.clip(np.round(x * s_ref[:, None]), -128, 127).astype(np.int8))
    # kernel on an identity-like weight reproduces dequantized activations xq / s (half-even ties included)
    K = 64
    codes = np.eye(K, dtype=np.int8)
    p = pack_ternary(codes, np.ones((K, 1), np.float32), -1)
    for path in ISA_PATHS:
        y = run_path(x, p, 8, path)
        np.testing.assert_array_equal(y, (xq.astype(np.float32) / s[:, None]).astype(np.float32))


@pytest.mark.parametrize("path", ISA_PATHS)
@pytest.mark.parametrize("K,g", [(96, 32), (256, 64), (512, 128)])
def test_a8_eps_reaches_the_kernel(K, g, path):
    """The activation quantizer's floor is the caller's eps on every path: rows whose absmax is below
    eps are scaled by 127 / eps, as the training quantizer with that eps does."""
    rng = np.random.default_rng(K + 11)
    p, _, _ = make_packed(rng, 9, K, g)
    x = rng.standard_normal((7, K)).astype(np.float32)
    x[[1, 4]] *= np.float32(2e-4)  # absmax ~1e-3 or less: below eps = 3e-3, far above 1e-5
    eps = 3e-3
    _, s = quantize_activations_int8(x, eps)
    assert np.all(s[[1, 4]] == np.float32(127) / np.float32(eps))
    ref = ternary_matmul_reference(x, p, 8, eps)
    for M in (1, 2, 7):  # decode and prefill kernels
        y = run_path(x[:M], p, 8, path)
        y_eps = run_path(x[:M], p, 8, path, eps=eps)
        err = np.abs(y_eps.astype(np.float64) - ref[:M])
        assert np.all(err <= _bound(x[:M], p, 8)), (M, float(err.max()))
        if M > 1:  # the default eps quantizes the tiny row differently
            assert not np.allclose(y[1], y_eps[1], rtol=1e-3, atol=0)
        np.testing.assert_array_equal(y_eps[0], y[0])  # rows above both floors are unchanged


def test_global_portable_switch_and_threads():
    rng = np.random.default_rng(5)
    p, _, _ = make_packed(rng, 33, 256, 64)
    x = rng.standard_normal((9, 256)).astype(np.float32)
    old = K_.get_num_threads()
    try:
        with portable_path():
            assert K_.get_force_portable()
            K_.set_num_threads(1)
            a = ternary_matmul(x, p)
            K_.set_num_threads(2)
            assert K_.get_num_threads() == 2
            b = ternary_matmul(x, p)
        assert not K_.get_force_portable()
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, ternary_matmul_numpy(x, p, force_portable=True))
    finally:
        K_.set_num_threads(old)


def test_max_isa_setting():
    assert get_max_isa() == MAX_ISA_BEST
    with isa_path(MAX_ISA_AVX2):
        assert get_max_isa() == MAX_ISA_AVX2
    assert get_max_isa() == MAX_ISA_BEST  # restored
    with pytest.raises(ValueError, match="MAX_ISA"):
        set_max_isa(2)


def test_leading_dims():
    rng = np.random.default_rng(6)
    p, _, _ = make_packed(rng, 5, 128, 32)
    x = rng.standard_normal((2, 3, 128)).astype(np.float32)
    y = ternary_matmul(x, p, act_bits=8)
    assert y.shape == (2, 3, 5)
    np.testing.assert_allclose(y.reshape(6, 5), ternary_matmul_reference(x.reshape(6, 128), p, 8), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("K,g", [(96, 32), (256, -1), (384, 128)])
def test_dx_kernel(K, g):
    rng = np.random.default_rng(K)
    p, _, _ = make_packed(rng, 11, K, g)
    dy = rng.standard_normal((4, 11)).astype(np.float32)
    for nt in (1, 2):
        np.testing.assert_allclose(ternary_matmul_dx_numpy(dy, p, num_threads=nt), ternary_matmul_dx_reference(dy, p),
                                   rtol=1e-5, atol=1e-5)


def test_errors():
    rng = np.random.default_rng(7)
    p, _, _ = make_packed(rng, 4, 64, 32)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="float32"):
        ternary_matmul(x.astype(np.float64), p)
    with pytest.raises(ValueError, match="float32"):
        ternary_matmul(x.astype(np.int32), p)
    with pytest.raises(ValueError, match="last dimension"):
        ternary_matmul(x[:, :32], p)
    with pytest.raises(ValueError, match="act_bits"):
        ternary_matmul(x, p, act_bits=4)
    with pytest.raises(ValueError, match="PackedTernary"):
        ternary_matmul(x, p.packed)
    with pytest.raises(ValueError, match="numpy array or a MindSpore Tensor"):
        ternary_matmul(x.tolist(), p)
    # the C entry point itself refuses inconsistent shapes with a nonzero code (never zeros)
    lib = c_library()
    y = np.zeros((2, 4), np.float32)
    rc = lib.bitcpm_ternary_matmul(x.ctypes.data, p.packed.ctypes.data, p.scales.ctypes.data, y.ctypes.data,
                                   2, 64, 4, 3, 0, 1e-5, 1, 0)  # 3 groups do not divide K=64
    assert rc != 0 and b"group" in lib.bitcpm_last_error()
    rc = lib.bitcpm_ternary_matmul(x.ctypes.data, p.packed.ctypes.data, p.scales.ctypes.data, y.ctypes.data,
                                   2, 62, 4, 2, 0, 1e-5, 1, 0)
    assert rc != 0 and b"multiple of 4" in lib.bitcpm_last_error()
    y[:] = 7.0
    rc = lib.bitcpm_ternary_matmul(x.ctypes.data, p.packed.ctypes.data, p.scales.ctypes.data, y.ctypes.data,
                                   2, 64, 4, 2, 8, 0.0, 1, 0)  # A8 with eps = 0
    assert rc != 0 and b"eps" in lib.bitcpm_last_error() and np.all(y == 7.0)
    with pytest.raises(ValueError, match="eps"):
        ternary_matmul(x, p, act_bits=8, eps=0.0)
    with pytest.raises(ValueError, match="eps"):
        ternary_matmul(x, p, act_bits=8, eps=float("nan"))


@pytest.mark.parametrize("K,g", [(96, 32), (256, -1), (384, 128)])
def test_quantize_pack_matches_numpy_quantizer(K, g):
    from bitcpm_ms.kernels import quantize_pack_numpy
    rng = np.random.default_rng(K + 1)
    w = (rng.standard_normal((13, K)) * 0.02).astype(np.float32)
    gg = K if g == -1 else g
    wg = w.reshape(13, K // gg, gg)
    s = np.maximum(np.abs(wg).mean(-1, keepdims=True), np.float32(1e-5)).astype(np.float32)
    codes = np.clip(np.round(wg / s), -1, 1).astype(np.int8).reshape(13, K)
    p = quantize_pack_numpy(w, g)
    np.testing.assert_allclose(p.scales, s[..., 0], rtol=1e-6)
    c2, _ = K_.unpack_ternary(p)
    assert np.mean(c2 == codes) > 0.999  # equal up to last-bit scale differences at rounding ties


@pytest.mark.skipif(not has_avx512_vnni(), reason="CPU without AVX-512 VNNI")
@pytest.mark.parametrize("K,g", [(96, 32), (128, 128), (256, 64), (384, 128), (640, -1), (1024, 256), (2048, 512)])
def test_vnni_a8_paths_agree(K, g):
    """VNNI A8: prefill (M >= 5) is bit-identical to the portable path; decode (M <= 4) matches the
    reference within the float32 bound; odd shapes (row tails of the 32-row panel, token tails of the
    6-token tile, odd block counts); 1 vs 2 threads bit-identical; force_portable and max_isa honoured."""
    rng = np.random.default_rng(K + g)
    for N in (1, 31, 33, 70):
        p, _, _ = make_packed(rng, N, K, g)
        for M in (1, 2, 3, 6, 7, 13):
            x = (rng.standard_normal((M, K)) * rng.uniform(0.1, 10, (M, 1))).astype(np.float32)
            yv = run_path(x, p, 8, "vnni", num_threads=1)
            np.testing.assert_array_equal(yv, run_path(x, p, 8, "vnni", num_threads=2))
            yp = run_path(x, p, 8, "portable", num_threads=1)
            if M >= 5:  # prefill kernel (kVnniPrefillMinM = 5)
                np.testing.assert_array_equal(yv, yp)
            err = np.abs(yv.astype(np.float64) - ternary_matmul_reference(x, p, 8))
            assert np.all(err <= _bound(x, p, 8)), (M, N, float(err.max()))
            if has_avx2():
                ya = run_path(x, p, 8, "avx2", num_threads=1)
                assert np.all(np.abs(ya.astype(np.float64) - yv) <= 2 * _bound(x, p, 8))
    assert get_max_isa() == MAX_ISA_BEST


@pytest.mark.parametrize("K,g", [(128, 32), (256, 64), (384, 128), (640, -1), (1024, 256)])
def test_weight_only_paths_agree(K, g):
    """Weight-only on every path (AVX-512 prefill for M >= 8 where available): odd M (token tails),
    odd N (row-panel tails), 1 vs 2 threads bit-identical, within the float32 bound of the reference."""
    rng = np.random.default_rng(K + 3 * g)
    for N in (1, 3, 33, 70):
        p, _, _ = make_packed(rng, N, K, g)
        for M in (1, 7, 8, 13, 30):
            x = rng.standard_normal((M, K)).astype(np.float32)
            ref = ternary_matmul_reference(x, p, None)
            for path in ISA_PATHS:
                y1 = run_path(x, p, None, path, num_threads=1)
                np.testing.assert_array_equal(y1, run_path(x, p, None, path, num_threads=2))
                err = np.abs(y1.astype(np.float64) - ref)
                assert np.all(err <= _bound(x, p, None)), (path, M, N, float(err.max()))


def test_a_process_keeps_the_build_it_loaded(monkeypatch):
    """Sources edited on disk during a run must not make later graphs load a second, unconfigured copy."""
    from bitcpm_ms.kernels import build
    first = build.library_path()
    monkeypatch.setattr(build, "build_key", lambda lib=build.TERNARY: "0" * 16)   # "the sources changed"
    assert build.library_path() == first


@pytest.mark.parametrize("k", [1, 7, 31, 32, 33, 100, 768])
def test_activation_quantizer_simd_equals_portable_and_reference(k):
    """The A8 activation quantizer (AVX2 form where the CPU has it) equals the portable loop and the
    numpy reference bit for bit: halfway values round to even, |x| at the row max maps to +-127, and a
    NaN is ignored by the row max and quantized to -128 in both C forms."""
    from bitcpm_ms.kernels.library import quantize_activations_numpy
    from bitcpm_ms.kernels.reference import quantize_activations_int8
    rng = np.random.default_rng(k)
    x = rng.standard_normal((5, k)).astype(np.float32) * np.array([[1], [1e-3], [50], [1e-7], [1]], np.float32)
    x[4] = np.arange(k) % 9 - 3.5                 # s = 127 / 127 = 1: every x * s is a tie (n + 0.5)
    x[4, 0] = 127.0
    simd, simd_s = quantize_activations_numpy(x, 1e-5)
    port, port_s = quantize_activations_numpy(x, 1e-5, portable=True)
    ref, ref_s = quantize_activations_int8(x, 1e-5)
    np.testing.assert_array_equal(simd, port)
    np.testing.assert_array_equal(simd_s, port_s)
    np.testing.assert_array_equal(simd, ref)
    np.testing.assert_array_equal(simd_s, ref_s)
    if k > 1:
        x[0, k // 2] = np.nan
        a, a_s = quantize_activations_numpy(x, 1e-5)
        b, b_s = quantize_activations_numpy(x, 1e-5, portable=True)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a_s, b_s)
        assert a[0, k // 2] == -128


@pytest.mark.parametrize("path", ISA_PATHS)
@pytest.mark.parametrize("K, g", [(1024, 128), (1024, 256), (2048, 512), (2048, 1024)])
@pytest.mark.parametrize("pattern", ["plus", "minus", "lanes"])
@pytest.mark.parametrize("M", [1, 6])
def test_a8_extreme_group_sums_exact(K, g, pattern, M, path):
    """Every activation at +-127 (s = 1) and whole groups of +1, -1 or 0 codes: the group sums and the
    +1-offset correction reach their extremes (|sum| = 127 g), so an int16 lane that could overflow in
    the decode GEMVs (M = 1) or the prompt tiles (M = 6: a tile of 4 tokens and 2 single tokens) would
    show (the AVX2 kernels start their int16 accumulators with the correction, split over lanes 0 and 1,
    for g <= 256). "lanes": +127 at the inputs that land in int16 lanes 0 and 1 (the first 4 of every
    32) and -127 elsewhere, so that the correction and those lanes' products add up instead of
    cancelling; with M = 6 the odd tokens take the opposite sign. Power-of-two scales: exact."""
    N = 13
    codes = np.zeros((N, K), np.int8)
    for n in range(N):  # per group: all +1, all -1, all 0, or alternating, varying by row
        for gi in range(K // g):
            kind = (n + gi) % 4
            codes[n, gi * g:(gi + 1) * g] = (1, -1, 0, 0)[kind] if kind < 3 else np.resize([1, -1], g)
    scales = np.exp2(np.arange(N * (K // g)) % 5 - 2.0).astype(np.float32).reshape(N, K // g)
    x = np.full((1, K), -127.0 if pattern == "minus" else 127.0, np.float32)
    if pattern == "lanes":
        x[0, np.arange(K) % 32 >= 4] = -127.0
    x = x * np.resize([1.0, -1.0], (M, 1)).astype(np.float32)
    y = run_path(x, pack_ternary(codes, scales, g), 8, path)
    isum = (x.astype(np.int64)[:, None, :] * codes.astype(np.int64)[None]).reshape(M, N, K // g, g).sum(-1)
    np.testing.assert_array_equal(y, (isum * scales.astype(np.float64)).sum(-1).astype(np.float32))


@pytest.mark.parametrize("K, g", [(768, 256), (1024, 128), (2048, 512), (384, 64), (640, 128)])
def test_avx2_a8_prompt_tiles_equal_decode_gemv_bit_for_bit(K, g):
    """AVX2 A8: a prompt of 7 tokens (a tile of 4, then single tokens) gives every token exactly what the
    decode GEMV gives it alone, so a prefill followed by decode steps matches stepwise decoding bit for
    bit whatever the group size (short groups, longer groups, groups of slots)."""
    if not has_avx2():
        pytest.skip("no AVX2")
    rng = np.random.default_rng(K * 3 + g)
    p, _, _ = make_packed(rng, 21, K, g)
    x = rng.standard_normal((7, K)).astype(np.float32) * np.linspace(0.1, 4.0, 7, dtype=np.float32)[:, None]
    with isa_path(MAX_ISA_AVX2):
        whole = ternary_matmul_numpy(x, p, 8)
        alone = np.concatenate([ternary_matmul_numpy(x[m:m + 1], p, 8) for m in range(7)])
    np.testing.assert_array_equal(whole, alone)


@pytest.mark.parametrize("K, g", [(768, 256), (1024, 128), (2304, 768), (512, 512)])
def test_avx2_decode_rows_of_four_equal_single_rows_bit_for_bit(K, g):
    """M = 1, AVX2 A8: four adjacent rows per pass (4u unpacking of slots 1 and 3) give each row exactly
    what the one-row kernel gives it (a one-row matrix runs that kernel), for N = 4k + 3."""
    from bitcpm_ms.kernels import MAX_ISA_AVX2, has_avx2, isa_path
    if not has_avx2():
        pytest.skip("no AVX2")
    rng = np.random.default_rng(K + g)
    _, codes, scales = make_packed(rng, 11, K, g)
    x = rng.standard_normal((1, K)).astype(np.float32) * 3
    with isa_path(MAX_ISA_AVX2):
        whole = ternary_matmul_numpy(x, K_.pack_ternary(codes, scales, g), 8)
        rows = [ternary_matmul_numpy(x, K_.pack_ternary(codes[n:n + 1], scales[n:n + 1], g), 8) for n in range(11)]
    np.testing.assert_array_equal(whole, np.concatenate(rows, axis=1))
