"""The fused ops as MindSpore AOT ops: forward and gradients (through bprop) against the numpy
references in PyNative and graph mode; bad shapes raise FusedOpError naming the op."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from bitcpm_ms.fused import FusedOpError
from bitcpm_ms.fused import reference as R
from bitcpm_ms.fused.ops import FusedAttention, FusedCrossEntropy, FusedRMSNorm, FusedSwiGLU

from .test_library import attention_case, close, f32


class Weighted(nn.Cell):
    """sum(op(*inputs)[first] * w): a scalar whose gradient feeds w into the op's backward
    (first: the ops that also return saved statistics return them second)."""

    def __init__(self, op, first=False):
        super().__init__()
        self.op = op
        self.first = first

    def construct(self, *args):
        *inputs, w = args
        out = self.op(*inputs)
        if self.first:
            out = out[0]
        return (out * w).sum()


class CrossEntropyBoth(nn.Cell):
    """sum(loss * w1 + lse * w2): exercises both outputs' gradients."""

    def __init__(self):
        super().__init__()
        self.ce = FusedCrossEntropy()

    def construct(self, x, labels, w1, w2):
        loss, lse = self.ce(x, labels)
        return (loss * w1).sum() + (lse * w2).sum()


def grads(net, inputs, positions):
    out = ms.grad(net, grad_position=positions)(*[Tensor(t) for t in inputs])
    return [g.asnumpy() for g in (out if isinstance(out, tuple) else (out,))]


def test_cross_entropy_op(mode):
    rng = np.random.default_rng(1)
    N, V = 13, 301
    x, labels = f32(rng, N, V, scale=3.0), rng.integers(-1, V + 1, N).astype(np.int32)
    w1, w2 = f32(rng, N), f32(rng, N)
    net = CrossEntropyBoth()
    loss, lse = R.cross_entropy_forward(x, labels)
    close(np.array(net(*[Tensor(t) for t in (x, labels, w1, w2)]).asnumpy()),
          np.array((loss * w1).sum() + (lse * w2).sum()), 1e-6, "value")
    (dx,) = grads(net, (x, labels, w1, w2), (0,))
    close(dx, R.cross_entropy_backward(x, labels, w1, w2), 1e-6, "dlogits")


def test_rms_norm_op(mode):
    rng = np.random.default_rng(2)
    x, w, dy = f32(rng, 2, 9, 40), f32(rng, 40), f32(rng, 2, 9, 40)
    net = Weighted(FusedRMSNorm(1e-5), first=True)
    dx, dw = grads(net, (x, w, dy), (0, 1))
    ref_dx, ref_dw = R.rmsnorm_backward(x, w, dy, 1e-5)
    close(dx, ref_dx, what="dx")
    close(dw, ref_dw, what="dw")
    y, rstd = FusedRMSNorm(1e-5)(Tensor(x), Tensor(w))
    close(rstd.asnumpy().reshape(-1), R.rmsnorm_forward(x, w, 1e-5)[1].reshape(-1), what="rstd")
    y = y.asnumpy()
    close(y, R.rmsnorm_forward(x, w, 1e-5)[0], what="y")


def test_swiglu_op(mode):
    rng = np.random.default_rng(3)
    g, u, dh = f32(rng, 3, 5, 77, scale=4.0), f32(rng, 3, 5, 77), f32(rng, 3, 5, 77)
    dg, du = grads(Weighted(FusedSwiGLU()), (g, u, dh), (0, 1))
    ref_dg, ref_du = R.swiglu_backward(g, u, dh)
    close(dg, ref_dg, what="dg")
    close(du, ref_du, what="du")


def test_attention_op(mode):
    rng = np.random.default_rng(4)
    B, S, H, Hkv, D = 2, 21, 4, 2, 10
    q, k, v, cos, sin, mask = attention_case(rng, B, S, H, Hkv, D)
    cos4, sin4 = cos.reshape(1, 1, S, D), sin.reshape(1, 1, S, D)     # MindFormers' freqs layout
    dout = f32(rng, B, S, H * D)
    op = FusedAttention(H, Hkv, D)
    out = op(*[Tensor(t) for t in (q, k, v, cos4, sin4, mask)])[0].asnumpy()
    close(out, R.attention_forward(q, k, v, cos, sin, mask, H, Hkv), 2e-6, "out")
    got = grads(Weighted(FusedAttention(H, Hkv, D), first=True), (q, k, v, cos4, sin4, mask, dout), (0, 1, 2))
    for g, ref, name in zip(got, R.attention_backward(q, k, v, cos, sin, mask, H, Hkv, dout), ("dq", "dk", "dv")):
        close(g, ref, 4e-6, name)


def test_ops_raise_by_name_on_bad_shapes():
    rng = np.random.default_rng(5)
    q, k, v, cos, sin, mask = attention_case(rng, 1, 6, 2, 1, 8)
    with pytest.raises(FusedOpError, match="FusedAttention: num_heads=3 must divide"):
        FusedAttention(3, 1, 8)(*[Tensor(t) for t in (q, k, v, cos, sin, mask)])
    with pytest.raises(FusedOpError, match="FusedAttention: mask"):
        FusedAttention(2, 1, 8)(*[Tensor(t) for t in (q, k, v, cos, sin, mask[..., :5])])
    with pytest.raises(FusedOpError, match="FusedCrossEntropy: logits must be 2-D"):
        FusedCrossEntropy()(Tensor(f32(rng, 2, 3, 4)), Tensor(np.zeros(6, np.int32)))
    with pytest.raises(FusedOpError, match="FusedSwiGLU: gate"):
        FusedSwiGLU()(Tensor(f32(rng, 4)), Tensor(f32(rng, 5)))
