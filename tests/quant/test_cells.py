"""Graph-mode quantizer Cells: forward equals the numpy reference, backward is exactly identity."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import ops

from bitcpm_ms.quant import ActFakeQuant, QuantConfig, WeightFakeQuant, fake_quant_activation, quantize_weight

from .reference import WeightedSum

SPACES = ["ternary", "asym4", "halfsym4", "intsym4", "five"]


@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("group_size", [16, 48])
def test_weight_quantizer_forward_matches_numpy_codes(space, group_size):
    w = (np.random.default_rng(7).standard_normal((6, 96)) * 0.02).astype(np.float32)
    out = WeightFakeQuant(space, group_size, 1e-5)(ms.Tensor(w)).asnumpy()
    codes, scales = quantize_weight(w, QuantConfig(quant_space=space, group_size=group_size))
    g = np.repeat(scales, group_size, axis=1)
    # same codes as the numpy reference (scales may differ in the last float bit: reduction order)
    np.testing.assert_array_equal(np.round(out / g).astype(np.int8), codes)
    np.testing.assert_allclose(out, codes * g, rtol=1e-5, atol=1e-9)


def test_weight_quantizer_gradient_is_identity():
    rng = np.random.default_rng(8)
    w = ms.Tensor(rng.standard_normal((8, 64)).astype(np.float32))
    g = ms.Tensor(rng.standard_normal((8, 64)).astype(np.float32))
    grad = ops.GradOperation()(WeightedSum(WeightFakeQuant("ternary", 32, 1e-5), g))(w)
    np.testing.assert_array_equal(grad.asnumpy(), g.asnumpy())


@pytest.mark.parametrize("bits", [8, 4])
def test_activation_quantizer_forward_and_ste(bits):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((10, 32)).astype(np.float32)
    cell = ActFakeQuant(bits)
    np.testing.assert_allclose(cell(ms.Tensor(x)).asnumpy(), fake_quant_activation(x, bits), rtol=1e-6, atol=1e-7)
    g = ms.Tensor(rng.standard_normal((10, 32)).astype(np.float32))
    grad = ops.GradOperation()(WeightedSum(cell, g))(ms.Tensor(x))
    np.testing.assert_array_equal(grad.asnumpy(), g.asnumpy())


def test_bad_quantizer_arguments():
    with pytest.raises(ValueError, match="unknown quantization space"):
        WeightFakeQuant("binary", 32, 1e-5)
    with pytest.raises(ValueError, match="positive"):
        WeightFakeQuant("ternary", -1, 1e-5)
    with pytest.raises(ValueError, match="4 or 8"):
        ActFakeQuant(3)


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("shape, group_size", [((7, 96), 32), ((5, 60), 12), ((3, 40), 40), ((9, 256), 64)])
def test_fused_cpu_ternary_quantizer_matches_reference_and_op_chain(portable, shape, group_size):
    """The fused C++ op (AVX2 when g % 8 == 0, else portable) gives the numpy reference's codes and
    the primitive chain's output; its gradient is still the identity."""
    from bitcpm_ms.kernels import portable_path
    w = (np.random.default_rng(11).standard_normal(shape) * 0.03).astype(np.float32)
    fused, chain = WeightFakeQuant("ternary", group_size, 1e-5), WeightFakeQuant("ternary", group_size, 1e-5, False)
    assert fused.fused and not chain.fused
    if portable:
        with portable_path():
            out = fused(ms.Tensor(w)).asnumpy()
    else:
        out = fused(ms.Tensor(w)).asnumpy()
    codes, scales = quantize_weight(w, QuantConfig(group_size=group_size))
    g = np.repeat(scales, group_size, axis=1)
    np.testing.assert_array_equal(np.round(out / g).astype(np.int8), codes)
    np.testing.assert_allclose(out, codes * g, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(out, chain(ms.Tensor(w)).asnumpy(), rtol=1e-6, atol=1e-12)
    gw = ms.Tensor(np.random.default_rng(12).standard_normal(shape).astype(np.float32))
    grad = ops.GradOperation()(WeightedSum(fused, gw))(ms.Tensor(w))
    np.testing.assert_array_equal(grad.asnumpy(), gw.asnumpy())
