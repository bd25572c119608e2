"""The whole-model decode kernel (`DecodeModel` AOT entry, called through ctypes) against its numpy
reference on small odd shapes: K greedy steps of embedding, layers, final norm, head and argmax, with
the caches written in place; weight-only and W1.58A8, float32 and float16 heads, rows at different
positions (one reaching the cache's end); bad arguments raise the kernel's message."""
import numpy as np
import pytest

from bitcpm_ms.kernels.decode_layer import layer_spec
from bitcpm_ms.kernels.aot_call import call_aot
from bitcpm_ms.kernels.decode_model import _op_arrays, decode_model_numpy, decode_model_reference, model_spec
from bitcpm_ms.kernels.library import _load, _raise_kernel
from tests.kernels.test_decode_layer import _proj


def _model(seed, bsz, heads, kvh, d, inter, seq, g, layers, vocab, positions, act_bits, steps, half_head=False,
           cache_dtype=np.float32):
    rng = np.random.default_rng(seed)
    hid = heads * d
    weights = []
    for _ in range(layers):
        projs = [_proj(rng, hid, hid, g), _proj(rng, kvh * d, hid, g), _proj(rng, kvh * d, hid, g),
                 _proj(rng, hid, hid, g), _proj(rng, inter, hid, g), _proj(rng, inter, hid, g),
                 _proj(rng, hid, inter, g)]
        weights.append((tuple(rng.uniform(0.5, 1.5, hid).astype(np.float32) for _ in range(2)), projs))
    caches = [tuple(rng.standard_normal((bsz, kvh, seq, d)).astype(cache_dtype) for _ in range(2))
              for _ in range(layers)]
    ang = np.outer(np.arange(seq + 3), rng.uniform(0.01, 1.0, d // 2))
    cos = np.cos(np.concatenate([ang, ang], 1)).astype(np.float32)
    sin = np.sin(np.concatenate([ang, ang], 1)).astype(np.float32)
    embedding = rng.standard_normal((vocab, hid)).astype(np.float32)
    head = rng.standard_normal((vocab, hid)).astype(np.float32)
    head = head.astype(np.float16) if half_head else head
    specs = np.concatenate([layer_spec(1e-5, 1e-6, 0.4, 1 / np.sqrt(d), heads, act_bits, 1e-5, write_cache=True)
                            for _ in range(layers)])
    ids = rng.integers(0, vocab, (bsz, 1)).astype(np.int32)
    return [ids, np.asarray(positions, np.int32), model_spec(3.0, 1e-5, 0.25, steps), embedding, cos, sin,
            rng.uniform(0.5, 1.5, hid).astype(np.float32), head, specs, weights, caches]


CASES = [  # bsz, heads, kvh, head_dim, intermediate, cache slots, group, layers, vocab, positions, steps
    (1, 4, 2, 16, 96, 24, 32, 2, 50, [5], 4),
    (3, 6, 3, 8, 80, 12, 16, 3, 37, [0, 4, 10], 3),     # row 2 reaches the last slot and stays there
    (2, 2, 1, 12, 40, 9, 8, 1, 23, [6, 1], 1),
]


def _copy_caches(args):
    return args[:-1] + [[(k.copy(), v.copy()) for k, v in args[-1]]]


def _assert_same_caches(args, other):
    """The (k, v) caches of two argument lists equal bit for bit."""
    for (k, v), (k2, v2) in zip(args[-1], other[-1]):
        np.testing.assert_array_equal(k, k2)
        np.testing.assert_array_equal(v, v2)


@pytest.mark.parametrize("cache_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("half_head", [False, True])
@pytest.mark.parametrize("act_bits", [None, 8])
@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_reference(case, act_bits, half_head, cache_dtype):
    """float16 caches: the op stores float32 keys rounded to nearest even, the reference assigns its
    float64 ones into the float16 arrays; both read them back exactly, so only a rare last-bit store
    differs (a float16 ulp is 1e-3 relative)."""
    args = _model(sum(case[:5]), *case[:-1], act_bits, case[-1], half_head, cache_dtype)
    ref_args = _copy_caches(args)
    got = decode_model_numpy(*args)
    want = decode_model_reference(*ref_args)
    np.testing.assert_array_equal(got, want)
    assert got.shape == (case[0], case[-1])
    tol = 1e-4 if cache_dtype == np.float32 else 1e-3
    for (k, v), (rk, rv) in zip(args[-1], ref_args[-1]):
        assert k.dtype == v.dtype == cache_dtype
        np.testing.assert_allclose(k, rk, rtol=tol, atol=tol)
        np.testing.assert_allclose(v, rv, rtol=tol, atol=tol)


def test_k_steps_equal_k_calls_of_one_step():
    """One call of 4 steps = 4 calls of 1 step, each fed the previous token at the next position:
    tokens and caches bit for bit (the op writes each step's keys before the next step reads them)."""
    args = _model(7, 2, 4, 2, 8, 48, 16, 16, 2, 31, [3, 7], 8, 4)
    one = _copy_caches(args)
    tokens = decode_model_numpy(*args)
    ids, pos = one[0], one[1].copy()
    singles = []
    for j in range(4):
        one[0], one[1], one[2] = ids, pos + j, model_spec(3.0, 1e-5, 0.25, 1)
        ids = decode_model_numpy(*one)
        singles.append(ids[:, 0])
    np.testing.assert_array_equal(tokens, np.stack(singles, 1))
    _assert_same_caches(args, one)


def _call(arrays):
    """DecodeModel on prepared op arrays (inputs then output), raising the kernel's message."""
    rc = call_aot(_load().DecodeModel, arrays)
    if rc:
        _raise_kernel(rc)


def _ids_outside(args, arrays):
    arrays[0][:] = 31                                     # vocabulary of 31


def _negative_position(args, arrays):
    arrays[1][:] = -1


def _steps_disagree(args, arrays):
    arrays[2][0, 3] = 5                                   # the spec says 5 steps, the output holds 2


def _no_write_cache(args, arrays):
    arrays[8][1, 7] = 0.0


def _cache_not_4d(args, arrays):
    arrays[-2] = np.zeros((1, 2, 16), np.float32)         # the last v cache


def _caches_mix_dtypes(args, arrays):
    arrays[-2] = arrays[-2].astype(np.float16)            # the last v cache float16, the others float32


def _cache_int32(args, arrays):
    arrays[-3] = arrays[-3].astype(np.int32)


@pytest.mark.parametrize("mutate, match", [
    (_ids_outside, "outside the vocabulary"), (_negative_position, "outside the rotary tables"),
    (_steps_disagree, "inconsistent shapes"), (_no_write_cache, "must have write_cache set"),
    (_cache_not_4d, "param 44 must have 4 dims"), (_caches_mix_dtypes, "not the first cache's dtype"),
    (_cache_int32, "param 43 \\(a KV cache\\) must be float32 or float16"),
])
def test_bad_arguments_are_named(mutate, match):
    args = _model(8, 1, 4, 2, 8, 48, 16, 16, 2, 31, [3], 8, 2)
    arrays = _op_arrays(*args)
    mutate(args, arrays)
    with pytest.raises(ValueError, match=match):
        _call(arrays)


@pytest.mark.parametrize("spin_us", [0, 1000])
def test_threads_and_polling_do_not_change_the_result(spin_us):
    """The op's parallel regions (q/k/v, gate/up, down, attention and head rows over 2 threads), with the
    pool's workers polling between them (spin sessions) or sleeping: the same tokens and caches as one
    thread, bit for bit. Shapes large enough that every region is split."""
    from bitcpm_ms.kernels import get_num_threads, get_spin_us, set_num_threads, set_spin_us
    args = _model(9, 2, 8, 2, 64, 768, 40, 128, 2, 700, [30, 12], 8, 4)
    two = _copy_caches(args)
    old_threads, old_spin = get_num_threads(), get_spin_us()
    try:
        set_num_threads(1)
        one_tokens = decode_model_numpy(*args)
        set_num_threads(2)
        assert set_spin_us(spin_us) == spin_us
        two_tokens = decode_model_numpy(*two)
    finally:
        set_num_threads(old_threads)
        set_spin_us(old_spin)
    np.testing.assert_array_equal(one_tokens, two_tokens)
    _assert_same_caches(args, two)


def test_spin_setting_clamps_at_zero():
    from bitcpm_ms.kernels import get_spin_us, set_spin_us
    old = get_spin_us()
    try:
        assert set_spin_us(-5) == 0 and get_spin_us() == 0
    finally:
        set_spin_us(old)
