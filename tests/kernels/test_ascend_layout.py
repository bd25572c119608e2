"""PackedTernary -> WeightQuantBatchMatmul (A16W4 per-group) layout, checked in numpy against the
documented format; the Ascend op itself cannot run here (unverified)."""
import numpy as np
import pytest

from bitcpm_ms.errors import ConversionError
from bitcpm_ms.kernels import pack_ternary, ternary_matmul_reference
from bitcpm_ms.kernels.ascend import (antiquant_reference, pack_int4_pairs, to_weight_quant_layout,
                                      unpack_int4_pairs)


def documented_int4_pack(values):
    """The packing of MindSpore's own WeightQuantBatchMatmul int4 tests (np_int4data_pack_to_int8):
    mask each value to 4 bits, even columns in the low nibble, odd columns shifted into the high one."""
    v = values.astype(np.int8) & 0x0F
    return (v[:, 0::2] | (v[:, 1::2] << 4)).astype(np.int8)


def test_int4_nibble_order_and_sign():
    v = np.array([[-1, 1, 0, -8, 7, -2]], np.int8)
    packed = pack_int4_pairs(v)
    assert packed.view(np.uint8).tolist() == [[0x1F, 0x80, 0xE7]]
    np.testing.assert_array_equal(packed, documented_int4_pack(v))
    np.testing.assert_array_equal(unpack_int4_pairs(packed), v)
    rng = np.random.default_rng(0)
    r = rng.integers(-8, 8, (5, 12)).astype(np.int8)
    np.testing.assert_array_equal(unpack_int4_pairs(pack_int4_pairs(r)), r)


@pytest.mark.parametrize("n, k, g", [(6, 128, 32), (10, 192, 64), (4, 256, 128), (8, 96, -1)])
def test_layout_reproduces_the_packed_weight(n, k, g):
    rng = np.random.default_rng(n * k)
    codes = rng.integers(-1, 2, (n, k)).astype(np.int8)
    gg = k if g == -1 else g
    scales = rng.uniform(0.01, 0.2, (n, k // gg)).astype(np.float32)
    packed = pack_ternary(codes, scales, g)
    layout = to_weight_quant_layout(packed, np.float32)
    assert layout.weight_int4x2.shape == (k, n // 2) and layout.weight_int4x2.dtype == np.int8
    np.testing.assert_array_equal(layout.weight_int4x2, documented_int4_pack(codes.T))
    if g == -1:
        assert layout.antiquant_group_size == 0 and layout.antiquant_scale.shape == (n,)
    else:
        assert layout.antiquant_group_size == g and layout.antiquant_scale.shape == (k // g, n)
    w_kn = antiquant_reference(layout)                           # [K, N], the documented formula
    np.testing.assert_array_equal(w_kn, packed.dequantize().T)
    x = rng.standard_normal((3, k)).astype(np.float32)
    np.testing.assert_allclose(x @ w_kn, ternary_matmul_reference(x, packed), rtol=1e-5, atol=1e-5)
    half = to_weight_quant_layout(packed)                        # float16 scales, as x's dtype on Ascend
    assert half.antiquant_scale.dtype == np.float16
    np.testing.assert_allclose(antiquant_reference(half), w_kn, rtol=1e-3)


@pytest.mark.parametrize("n, k, g, match", [(5, 128, 32, "odd"), (4, 128, 16, "multiple of 32"),
                                            (4, 96, 48, "multiple of 32")])
def test_layouts_cann_cannot_take_are_refused(n, k, g, match):
    packed = pack_ternary(np.zeros((n, k), np.int8), np.ones((n, k // g), np.float32), g)
    with pytest.raises(ConversionError, match=match):
        to_weight_quant_layout(packed)
