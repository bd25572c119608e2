"""Every formulation of TernaryLinear's weight path gives the straight-through gradient.

TernaryLinear has two weight paths: on CPU (stand-alone / data parallel) the fused C++ op on the
[out, in] weight; elsewhere (semi-auto parallel, non-ternary spaces, `fused_cpu_kernel: false`) a
plain Reshape to the grouped view [out, in/g, g] whose output goes into the custom-bprop
quantizer Cell (so that, under semi-auto parallel, the parameter's first user is that plain
Reshape and not the Cell: docs/distributed.md, "Gradient communication of the quantized weights").
For each path the forward equals x @ fake_quant(W).T and the gradients equal the numpy STE reference:
dW = dy^T x_q, dx = dy Wq, db = sum dy (x_q = x, or the per-token fake-quantized x with act_bits).
"""
import numpy as np
import pytest
import mindspore as ms
from mindspore import ops
from mindformers.modules.layers import Linear

from bitcpm_ms.quant import QuantConfig, TernaryLinear, fake_quant_activation, fake_quant_weight

from .reference import WeightedSum

IN, OUT, TOKENS = 96, 20, 7

PATHS = {
    "fused-cpu-op": dict(group_size=32),
    "grouped-view-per-channel": dict(group_size=-1, fused_cpu_kernel=False),
    "grouped-view-5-value": dict(group_size=48, quant_space="5-value"),
    "grouped-view-int8-acts": dict(group_size=16, fused_cpu_kernel=False, act_bits=8),
}


def _layer(cfg):
    lin = Linear(IN, OUT, has_bias=True, compute_dtype=ms.float32)
    rng = np.random.default_rng(3)
    lin.weight.set_data(ms.Tensor((rng.standard_normal((OUT, IN)) * 0.04).astype(np.float32)))
    lin.bias.set_data(ms.Tensor(rng.standard_normal(OUT).astype(np.float32)))
    return TernaryLinear.from_linear(lin, cfg)


@pytest.mark.parametrize("name", sorted(PATHS))
def test_forward_and_gradients_equal_the_straight_through_reference(name):
    cfg = QuantConfig(**PATHS[name])
    layer = _layer(cfg)
    fused = layer.weight_quantizer.fused
    assert fused == (name.startswith("fused")), "the test must exercise the path its name says"
    w, b = layer.weight.asnumpy(), layer.bias.asnumpy()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((TOKENS, IN)).astype(np.float32)
    dy = rng.standard_normal((TOKENS, OUT)).astype(np.float32)
    wq = fake_quant_weight(w, cfg)
    xq = fake_quant_activation(x, cfg.act_bits) if cfg.act_bits else x

    np.testing.assert_allclose(layer(ms.Tensor(x)).asnumpy(), xq @ wq.T + b, rtol=1e-5, atol=1e-5)
    grad = ops.GradOperation(get_all=True, get_by_list=True)
    (gx,), (gw, gb) = grad(WeightedSum(layer, ms.Tensor(dy)), layer.trainable_params())(ms.Tensor(x))
    np.testing.assert_allclose(gw.asnumpy(), dy.T @ xq, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb.asnumpy(), dy.sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx.asnumpy(), dy @ wq, rtol=1e-5, atol=1e-5)


def test_grouped_view_is_a_plain_op_outside_the_custom_bprop_cell():
    """The Reshape that first consumes the weight belongs to TernaryLinear (no custom bprop); only
    the quantizer Cell has one. Both paths give bit-identical outputs."""
    chain = _layer(QuantConfig(group_size=32, fused_cpu_kernel=False))
    fused = _layer(QuantConfig(group_size=32))
    assert "weight_view" in chain._primitives and not hasattr(chain, "bprop")
    assert hasattr(chain.weight_quantizer, "bprop")
    x = ms.Tensor(np.random.default_rng(5).standard_normal((3, IN)).astype(np.float32))
    np.testing.assert_allclose(chain(x).asnumpy(), fused(x).asnumpy(), rtol=1e-6, atol=1e-7)
