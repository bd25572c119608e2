"""quantize_weight / fake_quant_weight / activation quantization vs the plain reference."""
import numpy as np
import pytest
import mindspore as ms

from bitcpm_ms.quant import (QuantConfig, dequantize_weight, fake_quant_activation, fake_quant_weight,
                             quantize_activation, quantize_weight)

from .reference import reference_quantize

SPACES = ["ternary", "asym4", "halfsym4", "intsym4", "five"]


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("group_size", [-1, 16, 32, 96])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_codes_and_scales_match_reference(space, group_size, seed):
    # a seed fixed by the case (hash() of a str changes per process, so a failure would not reproduce)
    rng = np.random.default_rng([SPACES.index(space), group_size + 1, seed])
    w = (rng.standard_normal((7, 96)) * 0.05).astype(np.float32)
    cfg = QuantConfig(quant_space=space, group_size=group_size)
    codes, scales = quantize_weight(w, cfg)
    ref_levels, ref_s = reference_quantize(w, space, group_size)
    g = 96 if group_size == -1 else group_size
    assert codes.dtype == np.int8 and codes.shape == (7, 96)
    assert scales.dtype == np.float32 and scales.shape == (7, 96 // g)
    mult = 2 if space == "halfsym4" else 1          # half-sym codes are levels x 2
    np.testing.assert_array_equal(codes, (ref_levels * mult).astype(np.int8))
    np.testing.assert_allclose(scales * mult, ref_s, rtol=1e-6)
    np.testing.assert_allclose(dequantize_weight(codes, scales), ref_levels * np.repeat(ref_s, g, axis=1),
                               rtol=1e-6, atol=1e-9)


def test_ternary_codes_are_exactly_minus_one_zero_one():
    w = np.random.default_rng(0).standard_normal((32, 128)).astype(np.float32)
    codes, _ = quantize_weight(w, QuantConfig(group_size=32))
    assert set(np.unique(codes).tolist()) == {-1, 0, 1}


def test_fake_quant_keeps_shape_and_dtype_and_accepts_tensors():
    w = np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32)
    cfg = QuantConfig(group_size=32)
    fq = fake_quant_weight(w, cfg)
    assert fq.shape == w.shape and fq.dtype == w.dtype
    fq_t = fake_quant_weight(ms.Tensor(w), cfg)
    assert isinstance(fq_t, ms.Tensor)
    np.testing.assert_array_equal(fq_t.asnumpy(), fq)
    codes_t, scales_t = quantize_weight(ms.Tensor(w), cfg)
    assert isinstance(codes_t, ms.Tensor) and isinstance(scales_t, ms.Tensor)
    w16 = w.astype(np.float16)
    assert fake_quant_weight(w16, cfg).dtype == np.float16


def test_scale_floor_eps_on_all_zero_group():
    w = np.zeros((2, 64), np.float32)
    codes, scales = quantize_weight(w, QuantConfig(group_size=32, eps=1e-5))
    assert np.all(codes == 0) and np.allclose(scales, 1e-5)


def test_per_channel_equals_group_of_full_width():
    w = np.random.default_rng(2).standard_normal((5, 48)).astype(np.float32)
    a = quantize_weight(w, QuantConfig(group_size=-1))
    b = quantize_weight(w, QuantConfig(group_size=48))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("bits", [8, 4])
def test_activation_quant_per_token_absmax(bits):
    x = np.random.default_rng(3).standard_normal((3, 5, 40)).astype(np.float32)
    xq, s = quantize_activation(x, bits)
    qp = 2 ** (bits - 1) - 1
    assert s.shape == (3, 5, 1)
    np.testing.assert_allclose(s, qp / np.abs(x).max(-1, keepdims=True), rtol=1e-6)
    assert xq.min() >= -qp - 1 and xq.max() <= qp
    # the largest-magnitude element of each token maps to +-Qp exactly
    assert np.all(np.abs(xq).max(-1) == qp)
    np.testing.assert_allclose(fake_quant_activation(x, bits), xq / s, rtol=1e-6)
    assert np.abs(fake_quant_activation(x, bits) - x).max() <= (np.abs(x).max() / qp) / 2 + 1e-6
