"""The whole-layer decode kernel (`DecodeLayer` AOT entry, called through ctypes) against its numpy
reference on small odd shapes: weight-only and W1.58A8, GQA, MiniCPM residual scale, rows at
different positions; bad arguments raise the kernel's message."""
import numpy as np
import pytest

from bitcpm_ms.kernels import pack_ternary
from bitcpm_ms.kernels.decode_layer import decode_layer_numpy, decode_layer_reference, layer_spec


def _proj(rng, n, k, g):
    codes = rng.integers(-1, 2, (n, k)).astype(np.int8)
    return pack_ternary(codes, rng.uniform(0.01, 0.1, (n, k // g)).astype(np.float32), g)


def _case(seed, bsz, heads, kvh, d, inter, seq, g, positions, act_bits, res_scale=0.3):
    rng = np.random.default_rng(seed)
    hid = heads * d
    projs = [_proj(rng, hid, hid, g), _proj(rng, kvh * d, hid, g), _proj(rng, kvh * d, hid, g),
             _proj(rng, hid, hid, g), _proj(rng, inter, hid, g), _proj(rng, inter, hid, g), _proj(rng, hid, inter, g)]
    h = rng.standard_normal((bsz, hid)).astype(np.float32)
    norms = tuple(rng.uniform(0.5, 1.5, hid).astype(np.float32) for _ in range(2))
    kc = rng.standard_normal((bsz, kvh, seq, d)).astype(np.float32)
    vc = rng.standard_normal((bsz, kvh, seq, d)).astype(np.float32)
    ang = rng.uniform(0, 6.3, (bsz, d // 2)).astype(np.float32)
    cos, sin = np.cos(np.concatenate([ang, ang], 1)), np.sin(np.concatenate([ang, ang], 1))
    spec = layer_spec(1e-5, 1e-6, res_scale, 1 / np.sqrt(d), heads, act_bits, 1e-5)
    return [h, norms, projs, kc, vc, np.asarray(positions, np.int32), cos, sin, spec]


CASES = [  # bsz, heads, kvh, head_dim, intermediate, cache slots, group, positions
    (1, 4, 2, 16, 96, 24, 32, [5]),
    (3, 6, 3, 8, 80, 10, 16, [0, 4, 10]),
    (2, 2, 1, 12, 40, 7, 8, [6, 1]),
]


@pytest.mark.parametrize("act_bits", [None, 8])
@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_reference(case, act_bits):
    args = _case(sum(case[:6]), *case, act_bits)
    got = decode_layer_numpy(*args)
    want = decode_layer_reference(*args)
    for name, a, b in zip(("h_out", "k_rot", "v"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)


def test_residual_scale_one_is_llama():
    """res_scale 1 (no MiniCPM scaling): h_out = h + attention + feed-forward, checked by linearity."""
    args = _case(3, 1, 4, 2, 8, 24, 9, 8, [4], None, res_scale=1.0)
    h_out, _, _ = decode_layer_numpy(*args)
    args[-1] = layer_spec(1e-5, 1e-6, 0.0, 1 / np.sqrt(8), 4, None, 1e-5)    # scale 0: the layer is the identity
    same, _, _ = decode_layer_numpy(*args)
    np.testing.assert_array_equal(same, args[0])
    assert np.abs(h_out - args[0]).max() > 1e-3


def test_bad_projection_shape_is_named():
    args = _case(4, 1, 4, 2, 8, 24, 9, 8, [4], 8)
    args[2][6] = args[2][5]                       # w2 given the up projection's shape [I, H] instead of [H, I]
    with pytest.raises(ValueError, match="projection shapes do not fit"):
        decode_layer_numpy(*args)


def test_heads_inconsistent_with_hidden_is_named():
    args = _case(5, 1, 4, 2, 8, 24, 9, 8, [4], None)
    args[-1] = layer_spec(1e-5, 1e-6, 0.3, 0.3, 3, None, 1e-5)   # 3 heads x 8 != hidden 32
    with pytest.raises(ValueError, match="heads \\* head_dim"):
        decode_layer_numpy(*args)


def test_position_outside_the_cache_is_named():
    args = _case(6, 1, 4, 2, 8, 24, 9, 8, [10], None)          # 9 slots
    with pytest.raises(ValueError, match="outside the cache"):
        decode_layer_numpy(*args)


@pytest.mark.parametrize("cache_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("act_bits", [None, 8])
def test_write_cache_stores_the_new_key_and_value_in_place(act_bits, cache_dtype):
    """spec write_cache: the kernel and the reference store k_rot / v at slot positions[b] of the caches
    (a row at position S, a full cache, stores nothing); every other slot and the outputs are unchanged.
    A float16 cache stores the float32 outputs rounded to nearest even (numpy's astype)."""
    bsz, heads, kvh, d, inter, seq, g, positions = 3, 6, 3, 8, 80, 10, 16, [0, 4, 10]
    args = _case(11, bsz, heads, kvh, d, inter, seq, g, positions, act_bits)
    args[3], args[4] = args[3].astype(cache_dtype), args[4].astype(cache_dtype)
    tol = 1e-5 if cache_dtype == np.float32 else 1e-3
    plain = decode_layer_numpy(*args)
    before_k, before_v = args[3].copy(), args[4].copy()
    spec = args[-1].copy()
    spec[0, 7] = 1.0
    assert np.array_equal(spec, layer_spec(1e-5, 1e-6, 0.3, 1 / np.sqrt(d), heads, act_bits, 1e-5, write_cache=True))
    ref_k, ref_v = args[3].copy(), args[4].copy()
    want = decode_layer_reference(*args[:3], ref_k, ref_v, *args[5:-1], spec)
    got = decode_layer_numpy(*args[:-1], spec)                   # writes args[3], args[4] in place
    for a, b, c in zip(got, plain, want):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(args[3], ref_k, rtol=tol, atol=tol)
    np.testing.assert_allclose(args[4], ref_v, rtol=tol, atol=tol)
    assert args[3].dtype == args[4].dtype == cache_dtype
    for b, p in enumerate(positions):
        others = np.arange(seq) != p
        np.testing.assert_array_equal(args[3][b][:, others], before_k[b][:, others])
        if p < seq:
            np.testing.assert_array_equal(args[3][b][:, p], got[1][b].reshape(kvh, d).astype(cache_dtype))
            np.testing.assert_array_equal(args[4][b][:, p], got[2][b].reshape(kvh, d).astype(cache_dtype))
        else:
            np.testing.assert_array_equal(args[3][b], before_k[b])
    assert not np.array_equal(args[3], before_k)


@pytest.mark.parametrize("isa", ["avx2", "best"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("act_bits", [None, 8])
def test_shared_qkv_call_equals_a_lone_matmul_bit_for_bit(act_bits, threads, isa):
    """q, k and v share one activation quantization and one parallel region over their concatenated
    rows (matmul_multi_impl); the layer's v output must equal the lone kernel call on the same normed
    input bit for bit, whatever the thread split. The C rmsnorm is replayed in float32, in its order."""
    from bitcpm_ms.kernels import (MAX_ISA_AVX2, MAX_ISA_BEST, get_num_threads, isa_path, set_num_threads,
                                   ternary_matmul_numpy)
    bsz, heads, kvh, d, inter, seq, g, positions = 2, 4, 2, 16, 96, 24, 32, [5, 0]
    args = _case(12, bsz, heads, kvh, d, inter, seq, g, positions, act_bits)
    h, w = args[0], args[1][0]
    x = np.empty_like(h)
    for b in range(bsz):
        ss = np.float32(0)
        for v in h[b]:
            ss = np.float32(ss + v * v)
        r = np.float32(1) / np.sqrt(np.float32(ss / np.float32(h.shape[1]) + np.float32(1e-5)))
        x[b] = (h[b] * r) * w
    old = get_num_threads()
    set_num_threads(threads)
    try:
        with isa_path(MAX_ISA_AVX2 if isa == "avx2" else MAX_ISA_BEST):
            _, _, v = decode_layer_numpy(*args)
            lone = ternary_matmul_numpy(x, args[2][2], act_bits, 1e-5)
    finally:
        set_num_threads(old)
    np.testing.assert_array_equal(v, lone)
