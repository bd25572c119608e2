"""The KV-cache decoder's float kernels (C++, ctypes) against their numpy references on small odd shapes."""
import numpy as np
import pytest

from bitcpm_ms.kernels import portable_path
from bitcpm_ms.kernels.library import (decode_attention_numpy, exp_shifted_numpy, float_matmul_nt_numpy,
                                      float_to_half_numpy, silu_mul_numpy)
from bitcpm_ms.kernels.reference import decode_attention_reference, float_matmul_nt_reference


def _case(rng, bsz, h, kvh, seq, d, positions):
    q = rng.standard_normal((bsz, h * d)).astype(np.float32)
    k = rng.standard_normal((bsz, kvh * d)).astype(np.float32)
    v = rng.standard_normal((bsz, kvh * d)).astype(np.float32)
    kc = rng.standard_normal((bsz, kvh, seq, d)).astype(np.float32)
    vc = rng.standard_normal((bsz, kvh, seq, d)).astype(np.float32)
    ang = rng.uniform(0, 6.3, (bsz, d // 2)).astype(np.float32)
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))
    return q, k, v, kc, vc, np.asarray(positions, np.int32), cos, sin


@pytest.mark.parametrize("bsz, h, kvh, seq, d, positions", [
    (1, 4, 2, 16, 8, [5]), (3, 6, 2, 7, 10, [0, 3, 7]), (2, 3, 3, 9, 6, [8, 1]), (1, 2, 1, 33, 64, [20]),
])
def test_kernel_matches_reference(bsz, h, kvh, seq, d, positions):
    args = _case(np.random.default_rng(seq * d), bsz, h, kvh, seq, d, positions)
    ctx, k_rot = decode_attention_numpy(*args, scale=1 / np.sqrt(d))
    ref_ctx, ref_k = decode_attention_reference(*args, scale=1 / np.sqrt(d))
    np.testing.assert_allclose(k_rot, ref_k, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ctx, ref_ctx, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bsz, h, kvh, seq, d, positions", [(3, 6, 2, 7, 10, [0, 3, 7]), (1, 2, 1, 33, 64, [20])])
def test_float16_cache_matches_reference(bsz, h, kvh, seq, d, positions):
    """A float16 cache (llama.cpp's default cache type) is widened exactly: the kernel on the float16
    arrays equals the reference on the same values."""
    q, k, v, kc, vc, pos, cos, sin = _case(np.random.default_rng(seq + d), bsz, h, kvh, seq, d, positions)
    kc, vc = kc.astype(np.float16), vc.astype(np.float16)
    ctx, k_rot = decode_attention_numpy(q, k, v, kc, vc, pos, cos, sin, scale=1 / np.sqrt(d))
    ref_ctx, ref_k = decode_attention_reference(q, k, v, kc, vc, pos, cos, sin, scale=1 / np.sqrt(d))
    np.testing.assert_allclose(k_rot, ref_k, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ctx, ref_ctx, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="differ in dtype"):
        decode_attention_numpy(q, k, v, kc, vc.astype(np.float32), pos, cos, sin, scale=1.0)


def test_float_to_half_rounds_like_numpy():
    """The float16 cache's stores (float_to_half): nearest even like numpy's astype, on every 4099th
    float32 bit pattern (normals, subnormals, halfway cases, overflow to inf, NaN) and chosen edges."""
    edges = np.array([0.0, -0.0, 65504, 65519.996, 65520, -65520, 65536, 1e30, np.inf, -np.inf, 2 ** -24,
                      2 ** -25, -2 ** -25, 2 ** -25 * 1.0001, 3 * 2 ** -25, 2 ** -14, 2 ** -14 * (1 - 2 ** -11),
                      1 + 2 ** -11, 1 + 3 * 2 ** -11], np.float32)
    bits = np.arange(0, 2 ** 32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    for x in (edges, bits):
        with np.errstate(over="ignore"):
            want = x.astype(np.float16)
        got = float_to_half_numpy(x)
        same = (got.view(np.uint16) == want.view(np.uint16)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), x[~same][:5]


def test_softmax_exp_is_accurate_and_the_same_on_both_paths():
    """The softmax's exp (Cephes' expf as plain float operations): within 2 float32 ulp of exp on
    [-87, 1], 0 below -88.4, NaN kept, and the AVX2 form equal to the scalar one bit for bit (odd length:
    the 8-lane loop and the scalar tail)."""
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-87, 1, 100_003), [0.0, -1e-30, -0.5, -88.0, -88.5, -1e4, np.nan]])
    x = x.astype(np.float32)
    got = exp_shifted_numpy(x + np.float32(2.5), 2.5)     # the shift is subtracted first
    with portable_path():
        scalar = exp_shifted_numpy(x + np.float32(2.5), 2.5)
    np.testing.assert_array_equal(got.view(np.int32), scalar.view(np.int32))
    shifted = (x + np.float32(2.5)) - np.float32(2.5)
    want = np.exp(shifted.astype(np.float64))
    ok = shifted >= -87
    assert np.all(np.abs(got[ok] - want[ok]) <= 2 * np.spacing(want[ok].astype(np.float32)))
    assert got[shifted < -88.4].max() == 0 and np.isnan(got[-1]) and got[-7] == 1.0


def test_swiglu_silu_is_accurate_and_the_same_on_both_paths():
    """SwiGLU's silu(g) * u (with the softmax's exp): within 4 float32 ulp of float64 on a wide range, the
    AVX2 form equal to the scalar one bit for bit, including large |g| where exp saturates."""
    rng = np.random.default_rng(4)
    g = np.concatenate([rng.normal(0, 4, 50_001), [0.0, -0.0, 95.0, -95.0, 30.0, -30.0, 1e-20]]).astype(np.float32)
    u = rng.normal(0, 1, g.size).astype(np.float32)
    got = silu_mul_numpy(g, u)
    with portable_path():
        scalar = silu_mul_numpy(g, u)
    np.testing.assert_array_equal(got.view(np.int32), scalar.view(np.int32))
    g64 = g.astype(np.float64)
    want = g64 / (1 + np.exp(-g64)) * u
    assert np.all(np.abs(got - want) <= 4 * np.spacing(np.abs(want).astype(np.float32)) + 1e-30)


def test_slots_at_and_after_the_position_are_never_read():
    rng = np.random.default_rng(0)
    args = list(_case(rng, 2, 4, 2, 12, 8, [4, 9]))
    ctx, _ = decode_attention_numpy(*args, scale=0.3)
    args[3][0, :, 4:] = np.nan                          # row 0 reads slots 0..3 only
    args[4][1, :, 9:] = 1e30                            # row 1 reads slots 0..8 only
    ctx2, _ = decode_attention_numpy(*args, scale=0.3)
    np.testing.assert_array_equal(ctx, ctx2)


def test_threads_give_the_same_result():
    args = _case(np.random.default_rng(1), 8, 12, 4, 256, 64, [255, 1, 100, 37, 200, 0, 64, 128])
    one = decode_attention_numpy(*args, scale=0.125, num_threads=1)
    two = decode_attention_numpy(*args, scale=0.125, num_threads=2)
    np.testing.assert_array_equal(one[0], two[0])


@pytest.mark.parametrize("cache_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("h, kvh, d", [(12, 4, 64), (10, 2, 40), (7, 7, 12), (6, 1, 6), (9, 1, 96)])
def test_simd_path_equals_the_portable_loops_bit_for_bit(h, kvh, d, cache_dtype):
    """The AVX2 score and value loops (up to 4 query heads per key load, 32 outputs in registers) keep
    the portable loops' lane sums and order: identical outputs, odd head counts and head sizes, float32
    and float16 caches."""
    args = list(_case(np.random.default_rng(h * d), 3, h, kvh, 40, d, [39, 0, 17]))
    args[3], args[4] = args[3].astype(cache_dtype), args[4].astype(cache_dtype)
    fast = decode_attention_numpy(*args, scale=1 / np.sqrt(d))
    with portable_path():
        slow = decode_attention_numpy(*args, scale=1 / np.sqrt(d))
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_position_outside_the_cache_is_an_error():
    args = _case(np.random.default_rng(2), 1, 2, 1, 4, 4, [5])
    with pytest.raises(ValueError, match="outside the cache"):
        decode_attention_numpy(*args, scale=1.0)


@pytest.mark.parametrize("m, k, n", [(1, 256, 8192), (3, 37, 29), (8, 768, 130), (2, 5, 1)])
@pytest.mark.parametrize("portable", [False, True])
def test_float_matmul_nt_matches_reference(m, k, n, portable):
    rng = np.random.default_rng(m * k + n)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    with portable_path(portable):
        y = float_matmul_nt_numpy(x, w)
    np.testing.assert_allclose(y, float_matmul_nt_reference(x, w), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(float_matmul_nt_numpy(x, w, num_threads=2), float_matmul_nt_numpy(x, w, num_threads=1))


@pytest.mark.parametrize("m, k, n", [(1, 256, 8192), (3, 37, 29), (8, 768, 130), (2, 5, 1)])
@pytest.mark.parametrize("portable", [False, True])
def test_half_weight_matmul_nt_matches_reference(m, k, n, portable):
    """float16 weights (the half-precision head): float32 products and sums of the exactly widened
    halves, on the F16C and the portable path; the portable conversion covers subnormals and zeros."""
    rng = np.random.default_rng(m * k + n + 1)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float16)
    w.flat[:4] = np.array([6e-8, -3e-6, 0.0, -0.0], np.float16)      # subnormal halves and signed zeros
    with portable_path(portable):
        y = float_matmul_nt_numpy(x, w)
    np.testing.assert_allclose(y, float_matmul_nt_reference(x, w.astype(np.float32)), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(float_matmul_nt_numpy(x, w, num_threads=2), float_matmul_nt_numpy(x, w, num_threads=1))


def test_half_to_float_conversion_is_exact():
    """Every finite float16 value times 1.0 through the portable kernel equals numpy's widening."""
    halves = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    halves = halves[np.isfinite(halves)]
    w = np.ascontiguousarray(halves.reshape(-1, 1))                          # [N, 1]: y = x * w
    with portable_path(True):
        y = float_matmul_nt_numpy(np.ones((1, 1), np.float32), w)
    np.testing.assert_array_equal(y[0], halves.astype(np.float32))
    np.testing.assert_array_equal(float_matmul_nt_numpy(np.ones((1, 1), np.float32), w)[0], halves.astype(np.float32))
