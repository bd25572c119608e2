"""The whole-model prompt kernel (`PrefillModel` AOT entry, called through ctypes) against its numpy
reference, which decodes each prompt one token at a time: odd shapes, rows of different lengths (one
of a single token), weight-only and W1.58A8, float32 and float16 heads and caches; the caches are
written only at the valid slots; bad arguments raise the kernel's message."""
import numpy as np
import pytest

from bitcpm_ms.kernels.decode_model import decode_model_numpy, model_spec
from bitcpm_ms.kernels.prefill_model import prefill_model_numpy, prefill_model_reference
from tests.kernels.test_decode_model import _assert_same_caches, _copy_caches, _model

CASES = [  # bsz, heads, kvh, head_dim, intermediate, cache slots, group, layers, vocab, lengths, columns
    (1, 4, 2, 16, 96, 24, 32, 2, 50, [7], 8),
    (3, 6, 3, 8, 80, 12, 16, 3, 37, [1, 5, 12], 16),      # row 2 fills every cache slot; columns > slots
    (2, 2, 1, 12, 40, 9, 8, 1, 23, [6, 3], 6),
]


def _prefill_case(case, act_bits, half_head, cache_dtype):
    bsz, heads, kvh, d, inter, seq, g, layers, vocab, lengths, columns = case
    args = _model(sum(case[:5]), bsz, heads, kvh, d, inter, seq, g, layers, vocab, lengths, act_bits, 1, half_head,
                  cache_dtype)
    args[0] = np.random.default_rng(columns).integers(0, vocab, (bsz, columns)).astype(np.int32)
    args[2] = model_spec(3.0, 1e-5, 0.25, 0)
    return args


@pytest.mark.parametrize("cache_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("half_head", [False, True])
@pytest.mark.parametrize("act_bits", [None, 8])
@pytest.mark.parametrize("case", CASES)
def test_kernel_matches_token_by_token_reference(case, act_bits, half_head, cache_dtype):
    args = _prefill_case(case, act_bits, half_head, cache_dtype)
    before = _copy_caches(args)[-1]
    ref_args = _copy_caches(args)
    got = prefill_model_numpy(*args)
    want = prefill_model_reference(*ref_args)
    assert got.shape == (case[0], case[8]) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    tol = 1e-4 if cache_dtype == np.float32 else 1e-3
    for (k, v), (rk, rv), (k0, v0) in zip(args[-1], ref_args[-1], before):
        assert k.dtype == cache_dtype
        np.testing.assert_allclose(k, rk, rtol=tol, atol=tol)
        np.testing.assert_allclose(v, rv, rtol=tol, atol=tol)
        for b, n in enumerate(case[9]):                    # slots past a row's length keep what they held
            np.testing.assert_array_equal(k[b, :, n:], k0[b, :, n:])
            np.testing.assert_array_equal(v[b, :, n:], v0[b, :, n:])
            assert not np.array_equal(k[b, :, :n], k0[b, :, :n])


def test_prefill_then_decode_equals_decoding_the_prompt():
    """A prefill of n tokens then a decode step gives the tokens and caches of decoding the prompt one
    token at a time with DecodeModel (its first n - 1 steps fed the prompt): the op's contract."""
    case = (2, 4, 2, 8, 48, 16, 16, 2, 31, [5, 3], 5)
    args = _prefill_case(case, 8, False, np.float32)
    ids = args[0].copy()
    stepwise = _copy_caches(args)
    logits = prefill_model_numpy(*args)
    for t in range(max(case[9])):           # a row past its length repeats its last step (same key, same slot)
        step = list(stepwise)
        at = np.minimum(t, np.array(case[9]) - 1)
        step[0] = ids[np.arange(2), at][:, None].astype(np.int32)
        step[1] = at.astype(np.int32)
        step[2] = model_spec(3.0, 1e-5, 0.25, 1)
        tokens = decode_model_numpy(*step)
        for b, n in enumerate(case[9]):
            if t == n - 1:
                assert tokens[b, 0] == np.argmax(logits[b])
    for (k, v), (k1, v1) in zip(args[-1], stepwise[-1]):
        for b, n in enumerate(case[9]):
            np.testing.assert_allclose(k[b, :, :n], k1[b, :, :n], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(v[b, :, :n], v1[b, :, :n], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("lengths, match", [
    ([0, 3], "length 0 of row 0 outside 1..8"), ([3, 9], "length 9 of row 1 outside 1..8"),
])
def test_bad_lengths_are_named(lengths, match):
    case = (2, 4, 2, 8, 48, 8, 16, 1, 31, lengths, 10)      # 8 cache slots, 10 columns
    args = _prefill_case(case, None, False, np.float32)
    with pytest.raises(ValueError, match=match):
        prefill_model_numpy(*args)


def test_token_outside_the_vocabulary_is_named():
    args = _prefill_case((1, 4, 2, 8, 48, 8, 16, 1, 31, [4], 4), None, False, np.float32)
    args[0][0, 2] = 31
    with pytest.raises(ValueError, match="token id 31 at row 0, column 2 outside the vocabulary"):
        prefill_model_numpy(*args)


@pytest.mark.parametrize("isa", ["avx2", "best"])
def test_threads_do_not_change_the_result(isa):
    """The prompt GEMMs (M = the valid tokens), attention, the element-wise steps (RMSNorms, SwiGLU,
    residuals: split by rows from 2^16 values) and the head over 2 threads: the logits and caches of one
    thread, bit for bit, at either ISA cap."""
    from bitcpm_ms.kernels import MAX_ISA_AVX2, MAX_ISA_BEST, get_num_threads, set_max_isa, set_num_threads
    args = _prefill_case((2, 8, 2, 64, 768, 112, 128, 2, 700, [100, 12], 112), 8, False, np.float32)
    two = _copy_caches(args)
    old = get_num_threads()
    set_max_isa(MAX_ISA_AVX2 if isa == "avx2" else MAX_ISA_BEST)
    try:
        set_num_threads(1)
        one_logits = prefill_model_numpy(*args)
        set_num_threads(2)
        two_logits = prefill_model_numpy(*two)
    finally:
        set_num_threads(old)
        set_max_isa(MAX_ISA_BEST)
    np.testing.assert_array_equal(one_logits, two_logits)
    _assert_same_caches(args, two)
