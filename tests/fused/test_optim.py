"""CpuFusedAdamW and the fused gradient norm: kernels against the numpy references, the optimizer
against MindFormers' AdamW (groups, schedule), fallbacks, and the wrapper's norm and clipping."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, Tensor, nn
from mindspore.nn.learning_rate_schedule import PolynomialDecayLR
from mindformers.core.optim.adamw import AdamW

from bitcpm_ms.fused import library as L
from bitcpm_ms.fused import reference as R
from bitcpm_ms.fused.optim import CpuFusedAdamW
from bitcpm_ms.training import BitCPMTrainOneStepCell

from .test_library import close, f32, isa  # noqa: F401  (fixture)


@pytest.mark.parametrize("n", [1, 7, 4097, 70001])
def test_adamw_and_sum_squares_kernels(isa, n):  # noqa: F811
    rng = np.random.default_rng(n)
    p, g, m = f32(rng, n), f32(rng, n), f32(rng, n, scale=0.1)
    v = np.abs(f32(rng, n, scale=0.01))
    hyper = np.array([0.9, 0.95, 1e-8], np.float32)
    scalars = [np.array([3e-3], np.float32), np.array([0.01], np.float32), np.array([7], np.int32), hyper]
    one, clip = np.ones(1, np.float32), np.array([0.3716], np.float32)
    got = L.call_kernel("FusedAdamW", [p, g, m, v, *scalars, one], [(n,)] * 3)
    ref = R.adamw_update(p, g, m, v, 3e-3, 0.01, 0.9, 0.95, 1e-8, 7)
    for a, b, name in zip(got, ref, ("param", "m", "v")):
        close(a, b, 2e-6, name)
    # the clip factor inside the update: the reference on the scaled gradient, and bit for bit the
    # unscaled kernel on the gradient scaled beforehand in float32 (the separate pass it replaces)
    folded = L.call_kernel("FusedAdamW", [p, g, m, v, *scalars, clip], [(n,)] * 3)
    ref = R.adamw_update(p, g, m, v, 3e-3, 0.01, 0.9, 0.95, 1e-8, 7, grad_scale=float(clip[0]))
    prescaled = L.call_kernel("FusedAdamW", [p, g * clip[0], m, v, *scalars, one], [(n,)] * 3)
    for a, b, c, name in zip(folded, ref, prescaled, ("param", "m", "v")):
        close(a, b, 2e-6, name)
        np.testing.assert_array_equal(a, c, err_msg=name)
    (s,) = L.call_kernel("SumSquares", [g.reshape(1, -1)], [(1,)])
    assert abs(float(s[0]) - R.sum_squares(g)) <= 1e-5 * R.sum_squares(g)


class TwoParams(nn.Cell):
    """loss = sum(a * x1) + sum(b * x2): the inputs are the gradients."""

    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.a = Parameter(Tensor(f32(rng, 5, 7)), name="a")
        self.norm_b = Parameter(Tensor(f32(rng, 33)), name="norm_b")

    def construct(self, x1, x2):
        return (self.a * x1).sum() + (self.norm_b * x2).sum()


def run_optimizer(cls, steps=6, **kw):
    net = TwoParams()
    groups = [{"params": [net.a], "weight_decay": 0.1}, {"params": [net.norm_b], "weight_decay": 0.0}]
    sched = PolynomialDecayLR(learning_rate=1e-2, end_learning_rate=1e-3, decay_steps=steps, power=1.0)
    opt = cls(groups, learning_rate=sched, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, **kw)
    step = nn.TrainOneStepCell(net, opt)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        step(Tensor(f32(rng, 5, 7)), Tensor(f32(rng, 33)))
    return opt, {p.name: p.asnumpy().copy() for p in list(net.get_parameters()) + list(opt.exp_avg)
                 + list(opt.exp_avg_sq)}


def test_fused_adamw_matches_mindformers_adamw():
    fused_opt, fused = run_optimizer(CpuFusedAdamW)
    assert fused_opt.fused
    _, plain = run_optimizer(AdamW)
    assert sorted(fused) == sorted(plain)           # same state names: checkpoints interchange
    for name in plain:
        np.testing.assert_allclose(fused[name], plain[name], rtol=2e-5, atol=1e-7, err_msg=name)


def test_fused_adamw_falls_back_to_the_op_chain():
    opt, got = run_optimizer(CpuFusedAdamW, swap=True)
    assert not opt.fused
    _, plain = run_optimizer(AdamW, swap=True)
    for name in plain:
        np.testing.assert_array_equal(got[name], plain[name])


class Dot(nn.Cell):
    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(np.ones((3, 5), np.float32)), name="w")
        self.u = Parameter(Tensor(np.ones(4, np.float32)), name="u")

    def construct(self, x, y):
        return (self.w * x).sum() + (self.u * y).sum()


def test_wrapper_fused_norm_and_clipping():
    rng = np.random.default_rng(3)
    x, y = f32(rng, 3, 5, scale=2.0), f32(rng, 4, scale=2.0)
    expected_norm = float(np.sqrt((x.astype(np.float64) ** 2).sum() + (y.astype(np.float64) ** 2).sum()))
    results = {}
    for fused in (True, False):
        net = Dot()
        step = BitCPMTrainOneStepCell(net, nn.SGD(net.trainable_params(), learning_rate=0.1), max_grad_norm=1.0,
                                      fused_norm=fused)
        assert (step.sq_sum is not None) == fused
        gnorm = float(step(Tensor(x), Tensor(y))[4].asnumpy())
        results[fused] = (gnorm, net.w.asnumpy().copy(), net.u.asnumpy().copy())
    assert abs(results[True][0] - expected_norm) <= 1e-6 * expected_norm
    assert abs(results[True][0] - results[False][0]) <= 1e-6 * expected_norm
    np.testing.assert_allclose(results[True][1], 1 - 0.1 * x / expected_norm, rtol=1e-6)   # clipped to 1
    np.testing.assert_allclose(results[True][2], results[False][2], rtol=1e-6)


def _clipped_training(opt_cls, fold, steps=4):
    """Weights and moments after `steps` clipped steps of TwoParams under our wrapper (gradients with
    norm ~20, so the clip factor is ~0.05 every step); `fold` False hides takes_grad_scale."""
    net = TwoParams()
    opt = opt_cls(net.trainable_params(), learning_rate=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    if not fold:
        opt.takes_grad_scale = False
    step = BitCPMTrainOneStepCell(net, opt, max_grad_norm=1.0)
    assert step.fold_clip == fold
    rng = np.random.default_rng(5)
    norms = []
    for _ in range(steps):
        norms.append(float(step(Tensor(f32(rng, 5, 7, scale=3.0)), Tensor(f32(rng, 33, scale=3.0)))[4].asnumpy()))
    state = {p.name: p.asnumpy().copy() for p in list(net.get_parameters()) + list(opt.exp_avg) + list(opt.exp_avg_sq)}
    return norms, state


def test_clip_factor_folded_into_the_fused_update_is_exact():
    """The wrapper hands the clip factor to CpuFusedAdamW instead of scaling the gradients: the same
    bits as scaling first (fused kernel both ways), and MindFormers' AdamW on scaled gradients to rtol 2e-5."""
    norms, folded = _clipped_training(CpuFusedAdamW, fold=True)
    assert min(norms) > 5.0                                     # clipping was active
    _, separate = _clipped_training(CpuFusedAdamW, fold=False)
    _, plain = _clipped_training(AdamW, fold=False)
    for name in folded:
        np.testing.assert_array_equal(folded[name], separate[name], err_msg=name)
        np.testing.assert_allclose(folded[name], plain[name], rtol=2e-5, atol=1e-7, err_msg=name)


def test_fallback_takes_the_clip_factor_too():
    """With swap=True (MindFormers' AdamW inside) the factor scales the gradients before the update."""
    norms, got = _clipped_training(lambda *a, **k: CpuFusedAdamW(*a, swap=True, **k), fold=True)
    _, plain = _clipped_training(AdamW, fold=False)
    for name in plain:
        np.testing.assert_allclose(got[name], plain[name], rtol=1e-6, atol=1e-8, err_msg=name)
