"""TernaryLinear: forward = x @ fake_quant(W).T, STE gradient = full-precision gradient."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import ops
from mindformers.modules.layers import Linear

from bitcpm_ms.quant import QuantConfig, TernaryLinear, fake_quant_activation, fake_quant_weight

from .reference import WeightedSum


def _pair(in_f=96, out_f=24, has_bias=True, seed=0):
    lin = Linear(in_f, out_f, has_bias=has_bias, compute_dtype=ms.float32)
    rng = np.random.default_rng(seed)
    lin.weight.set_data(ms.Tensor((rng.standard_normal((out_f, in_f)) * 0.05).astype(np.float32)))
    if has_bias:
        lin.bias.set_data(ms.Tensor(rng.standard_normal(out_f).astype(np.float32)))
    return lin


@pytest.mark.parametrize("group_size", [-1, 32, 48])
def test_forward_equals_fake_quant_matmul(group_size):
    lin = _pair()
    cfg = QuantConfig(group_size=group_size)
    tl = TernaryLinear.from_linear(lin, cfg)
    x = np.random.default_rng(1).standard_normal((2, 5, 96)).astype(np.float32)
    y = tl(ms.Tensor(x)).asnumpy()
    ref = x @ fake_quant_weight(lin.weight.asnumpy(), cfg).T + lin.bias.asnumpy()
    assert y.shape == (2, 5, 24)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_forward_with_int8_activations():
    lin = _pair(has_bias=False)
    cfg = QuantConfig(group_size=32, act_bits=8)
    tl = TernaryLinear.from_linear(lin, cfg)
    x = np.random.default_rng(2).standard_normal((7, 96)).astype(np.float32)
    ref = fake_quant_activation(x, 8) @ fake_quant_weight(lin.weight.asnumpy(), cfg).T
    np.testing.assert_allclose(tl(ms.Tensor(x)).asnumpy(), ref, rtol=1e-5, atol=1e-5)


def test_disabled_is_exactly_the_mindformers_linear():
    lin = _pair(seed=3)
    x = ms.Tensor(np.random.default_rng(4).standard_normal((3, 96)).astype(np.float32))
    ref = lin(x).asnumpy()
    tl = TernaryLinear.from_linear(lin, QuantConfig(enabled=False))
    assert not hasattr(tl, "weight_quantizer")
    np.testing.assert_array_equal(tl(x).asnumpy(), ref)


def test_constructor_matches_linear_signature_and_parameter_names():
    tl = TernaryLinear(64, 16, has_bias=True, compute_dtype=ms.float32, quant_config=QuantConfig(group_size=32))
    assert [p.name for p in tl.trainable_params()] == ["weight", "bias"]
    assert tl.weight.shape == (16, 64)
    with pytest.raises(ValueError, match="does not divide"):
        TernaryLinear(60, 16, quant_config=QuantConfig(group_size=32))
    with pytest.raises(ValueError, match="dense"):
        TernaryLinear(64, 16, transpose_b=False, quant_config=QuantConfig(group_size=32))


def test_ste_gradient_equals_full_precision_gradient_in_graph_mode():
    """d/dW sum(layer(x) * g) with QAT equals the full-precision layer's gradient at the same input
    (the STE makes the weight quantizer transparent; x and dy are identical, so dW = dy^T x)."""
    lin_q = _pair(seed=5)
    lin_fp = _pair(seed=5)
    tl = TernaryLinear.from_linear(lin_q, QuantConfig(group_size=32))
    rng = np.random.default_rng(6)
    x = ms.Tensor(rng.standard_normal((4, 96)).astype(np.float32))
    g = ms.Tensor(rng.standard_normal((4, 24)).astype(np.float32))
    grad = ops.GradOperation(get_by_list=True)
    gq = grad(WeightedSum(tl, g), tl.trainable_params())(x)
    gf = grad(WeightedSum(lin_fp, g), lin_fp.trainable_params())(x)
    for a, b in zip(gq, gf):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-6, atol=1e-7)
    assert ms.get_context("mode") == ms.GRAPH_MODE
