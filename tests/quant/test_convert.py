"""convert_model: packed inference layers reproduce the fake-quant TernaryLinear forward.

Tolerance: weight-only and A8 outputs agree to rtol 1e-5 / atol 1e-5 (float32 summation order
differs: the fake-quant path multiplies dequantized floats, the kernel sums integers/codes per
group then scales). With integer activations of row absmax 127 (s_token = 1) and weights whose
group scale is a power of two, every step is exact and A8 outputs must be bit-identical.
"""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor, nn  # noqa: E402
from mindspore import dtype as mstype  # noqa: E402

from bitcpm_ms.kernels import PackedTernaryLinear, unpack_ternary  # noqa: E402
from bitcpm_ms.quant import QuantConfig, TernaryLinear, quantize_weight  # noqa: E402
from bitcpm_ms.quant.convert import convert_model  # noqa: E402


def _tl(i, o, cfg, has_bias=True, seed=0, weights=None):
    layer = TernaryLinear(i, o, has_bias=has_bias, compute_dtype=mstype.float32, param_init_type=mstype.float32,
                          quant_config=cfg)
    rng = np.random.default_rng(seed)
    w = weights if weights is not None else rng.standard_normal((o, i)).astype(np.float32) * 0.05
    layer.weight.set_data(Tensor(w))
    if has_bias:
        layer.bias.set_data(Tensor(rng.standard_normal(o).astype(np.float32) * 0.1))
    return layer


class Block(nn.Cell):
    def __init__(self, cfg, d=128, h=256, seed=0):
        super().__init__()
        self.up = _tl(d, h, cfg, seed=seed)
        self.down = _tl(h, d, cfg, has_bias=False, seed=seed + 1)
        self.act = nn.ReLU()

    def construct(self, x):
        return x + self.down(self.act(self.up(x)))


class Stack(nn.Cell):
    def __init__(self, cfg):
        super().__init__()
        self.blocks = nn.CellList([Block(cfg, seed=0), Block(cfg, seed=10)])
        self.head = nn.SequentialCell([_tl(128, 64, cfg, seed=20)])

    def construct(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


@pytest.mark.parametrize("group_size,act_bits", [(-1, None), (32, None), (64, 8), (128, 8)])
def test_stack_matches_fake_quant(mode, group_size, act_bits):
    cfg = QuantConfig(quant_space="ternary", group_size=group_size, act_bits=act_bits)
    net = Stack(cfg)
    x = Tensor(np.random.default_rng(1).standard_normal((2, 5, 128)).astype(np.float32))
    ref = net(x).asnumpy()
    weights = {p.name: p.asnumpy().copy() for p in net.get_parameters()}
    convert_model(net)
    names = sorted(p.name for p in net.get_parameters())
    assert "blocks.0.up.weight_packed" in names and "head.0.weight_scales" in names and "blocks.1.up.bias" in names
    assert not any(n.endswith(".weight") for n in names)  # no latent weights left
    assert all(not p.requires_grad for p in net.get_parameters())
    assert isinstance(net.blocks[1].down, PackedTernaryLinear)
    # packed codes/scales are exactly quantize_weight's
    codes, scales = quantize_weight(weights["blocks.1.down.weight"], cfg)
    c2, s2 = unpack_ternary(net.blocks[1].down.to_packed())
    np.testing.assert_array_equal(c2, codes)
    np.testing.assert_array_equal(s2, scales)
    out = net(x).asnumpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_a8_exact_integer_part(mode):
    """Weights +-0.25 (group scale 0.25 exactly), integer inputs with absmax 127: bit-identical."""
    cfg = QuantConfig(quant_space="ternary", group_size=64, act_bits=8)
    rng = np.random.default_rng(3)
    w = (rng.choice([-1.0, 1.0], size=(48, 256)) * 0.25).astype(np.float32)
    layer = _tl(256, 48, cfg, has_bias=False, weights=w)
    x = rng.integers(-127, 128, size=(7, 256)).astype(np.float32)
    x[:, 3] = 127.0
    ref = layer(Tensor(x)).asnumpy()
    packed = convert_model(layer)
    assert isinstance(packed, PackedTernaryLinear)
    out = packed(Tensor(x)).asnumpy()
    np.testing.assert_array_equal(out, ref)


def test_a8_eps_follows_quant_config(mode):
    """A layer trained with another activation-quantizer eps converts to the same quantizer: tokens
    whose absmax is below eps are scaled by 127 / eps in the fake-quant and in the packed forward."""
    cfg = QuantConfig(quant_space="ternary", group_size=64, act_bits=8, eps=1e-3)
    layer = _tl(256, 48, cfg, has_bias=False, seed=4)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 256)).astype(np.float32)
    x[1] *= 1e-4  # every value tiny: absmax ~4e-4 < eps
    x[3] *= 2e-4
    ref = layer(Tensor(x)).asnumpy()
    packed = convert_model(layer)
    assert isinstance(packed, PackedTernaryLinear) and packed.eps == 1e-3
    out = packed(Tensor(x)).asnumpy()
    tiny = [1, 3]
    # float reassociation only: absolute tolerance scaled like the rows (outputs ~1e-1 and ~1e-5)
    np.testing.assert_allclose(out[[0, 2]], ref[[0, 2]], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[tiny], ref[tiny], rtol=1e-5, atol=1e-9)
    # with the kernel's default floor (1e-5) the tiny tokens would come out differently
    default_eps = PackedTernaryLinear(packed.to_packed(), act_bits=8)(Tensor(x)).asnumpy()
    assert not np.allclose(default_eps[tiny], ref[tiny], rtol=1e-3, atol=1e-9)


def test_errors_and_skips():
    cfg5 = QuantConfig(quant_space="5-value", group_size=32)
    net = nn.SequentialCell([_tl(64, 32, cfg5)])
    with pytest.raises(ValueError, match="only 'ternary'"):
        convert_model(net)
    net = nn.SequentialCell([_tl(64, 32, QuantConfig(group_size=32, act_bits=4))])
    with pytest.raises(ValueError, match="act_bits=4"):
        convert_model(net)
    off = _tl(64, 32, QuantConfig(group_size=32, enabled=False))
    net = nn.SequentialCell([off])
    convert_model(net)
    assert net[0] is off  # full-precision layers are left alone
