"""MindSpore AOT Custom op: PyNative and GRAPH_MODE, bprop, PackedTernaryLinear."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor, nn  # noqa: E402

from bitcpm_ms.kernels import (PackedTernaryLinear, get_ms_op, ternary_matmul,  # noqa: E402
                               ternary_matmul_reference)

from .conftest import make_packed  # noqa: E402


class OpNet(nn.Cell):
    def __init__(self, p, act_bits, eps=1e-5):
        super().__init__()
        self.op = get_ms_op(act_bits, eps)
        self.w = Tensor(p.packed)
        self.s = Tensor(p.scales)

    def construct(self, x):
        return self.op(x, self.w, self.s)


class LossNet(nn.Cell):
    def __init__(self, inner, r):
        super().__init__()
        self.inner = inner
        self.r = Tensor(r)

    def construct(self, x):
        return (self.inner(x) * self.r).sum()


@pytest.mark.parametrize("act_bits", [None, 8], ids=["w", "a8"])
def test_op_matches_reference(mode, act_bits):
    rng = np.random.default_rng(11)
    for M, K, N, g in [(3, 256, 5, 64), (17, 96, 64, 32), (1, 384, 7, -1)]:
        p, _, _ = make_packed(rng, N, K, g)
        x = rng.standard_normal((M, K)).astype(np.float32)
        ref = ternary_matmul_reference(x, p, act_bits)
        y = OpNet(p, act_bits)(Tensor(x))
        assert isinstance(y, Tensor) and y.shape == (M, N)
        np.testing.assert_allclose(y.asnumpy(), ref, rtol=1e-5, atol=1e-5)
        y2 = ternary_matmul(Tensor(x), p, act_bits)  # functional API on Tensors
        assert isinstance(y2, Tensor)
        np.testing.assert_array_equal(y2.asnumpy(), y.asnumpy())


def _close_per_row(y, ref, x):
    """Float reassociation only: tolerance relative to each token's magnitude."""
    tol = 1e-5 * np.abs(ref) + 1e-6 * np.abs(x).max(1, keepdims=True)
    assert np.all(np.abs(y - ref) <= tol), float(np.abs(y - ref).max())


def test_a8_eps(mode):
    """eps (the activation quantizer's floor) reaches the kernel through the op, the functional API
    and PackedTernaryLinear: a token of tiny values is quantized with 127 / eps."""
    rng = np.random.default_rng(16)
    p, _, _ = make_packed(rng, 6, 256, 64)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    x[1] *= 1e-4
    ref = ternary_matmul_reference(x, p, 8, eps=1e-3)
    y = OpNet(p, 8, eps=1e-3)(Tensor(x)).asnumpy()
    _close_per_row(y, ref, x)
    assert not np.allclose(y[1], ternary_matmul_reference(x, p, 8)[1], rtol=1e-3, atol=0)  # default eps differs
    np.testing.assert_array_equal(ternary_matmul(Tensor(x), p, 8, eps=1e-3).asnumpy(), y)
    np.testing.assert_array_equal(PackedTernaryLinear(p, act_bits=8, eps=1e-3)(Tensor(x)).asnumpy(), y)
    with pytest.raises(ValueError, match="eps"):
        get_ms_op(8, eps=-1.0)


def test_bprop(mode):
    rng = np.random.default_rng(12)
    M, K, N = 4, 256, 9
    p, _, _ = make_packed(rng, N, K, 64)
    x = rng.standard_normal((M, K)).astype(np.float32)
    r = rng.standard_normal((M, N)).astype(np.float32)
    for act_bits in (None, 8):  # A8 uses the same STE-style dx = dy @ W_q
        dx = ms.grad(LossNet(OpNet(p, act_bits), r))(Tensor(x)).asnumpy()
        np.testing.assert_allclose(dx, r @ p.dequantize(), rtol=1e-5, atol=1e-5)
    # finite differences on the weight-only op (linear in x)
    net = LossNet(OpNet(p, None), r)
    dx = ms.grad(net)(Tensor(x)).asnumpy()
    e = np.zeros_like(x)
    e[1, 7] = 1e-2
    fd = (net(Tensor(x + e)).asnumpy() - net(Tensor(x - e)).asnumpy()) / 2e-2
    assert abs(fd - dx[1, 7]) < 1e-3 * max(1.0, abs(fd))


def test_packed_linear(mode):
    rng = np.random.default_rng(13)
    p, _, _ = make_packed(rng, 12, 128, 32)
    bias = rng.standard_normal(12).astype(np.float32)
    x = rng.standard_normal((2, 3, 128)).astype(np.float32)
    for act_bits in (None, 8):
        lin = PackedTernaryLinear(p, bias=bias, act_bits=act_bits)
        names = sorted(q.name for q in lin.get_parameters())
        assert names == ["bias", "weight_packed", "weight_scales"]
        assert all(not q.requires_grad for q in lin.get_parameters())
        y = lin(Tensor(x)).asnumpy()
        assert y.shape == (2, 3, 12)
        ref = ternary_matmul_reference(x.reshape(6, 128), p, act_bits) + bias
        np.testing.assert_allclose(y.reshape(6, 12), ref, rtol=1e-5, atol=1e-5)


def test_ms_errors():
    rng = np.random.default_rng(14)
    p, _, _ = make_packed(rng, 4, 64, 32)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    with pytest.raises(ValueError, match="last dimension"):
        ternary_matmul(Tensor(x[:, :32]), p)
    with pytest.raises(ValueError, match="float32"):
        ternary_matmul(Tensor(x.astype(np.float16)), p)
    with pytest.raises(ValueError, match="float32"):
        ternary_matmul(Tensor(x.astype(np.int32)), p)
    # the raw op with inconsistent shapes fails loudly (kernel returns a nonzero code)
    with pytest.raises(RuntimeError, match="Return value"):
        y = get_ms_op(None)(Tensor(x[:, :32]), Tensor(p.packed), Tensor(p.scales))
        y.asnumpy()


def _mindir_roundtrip(cell, x, path):
    """cell exported to MindIR in graph mode and loaded back: (loaded output, cell output) as numpy."""
    old = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    try:
        ms.export(cell, x, file_name=path, file_format="MINDIR")
        return nn.GraphCell(ms.load(path + ".mindir"))(x).asnumpy(), cell(x).asnumpy()
    finally:
        ms.set_context(mode=old)


def test_mindir_export_keeps_eps(tmp_path):
    rng = np.random.default_rng(17)
    p, _, _ = make_packed(rng, 8, 128, 64)
    lin = PackedTernaryLinear(p, act_bits=8, eps=1e-3)
    xn = rng.standard_normal((3, 128)).astype(np.float32)
    xn[2] *= 1e-4
    y, direct = _mindir_roundtrip(lin, Tensor(xn), str(tmp_path / "packed_linear_eps"))
    np.testing.assert_array_equal(y, direct)
    _close_per_row(y, ternary_matmul_reference(xn, p, 8, eps=1e-3), xn)


def test_mindir_export_roundtrip(tmp_path):
    rng = np.random.default_rng(15)
    p, _, _ = make_packed(rng, 8, 128, 64)
    lin = PackedTernaryLinear(p, act_bits=8)
    x = Tensor(rng.standard_normal((3, 128)).astype(np.float32))
    loaded, direct = _mindir_roundtrip(lin, x, str(tmp_path / "packed_linear"))
    np.testing.assert_array_equal(loaded, direct)
