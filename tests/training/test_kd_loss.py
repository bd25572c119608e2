"""The distillation loss ((1 - alpha) CE + alpha T^2 KL(teacher || student)) against numpy references."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import nn, ops
from mindformers.core.loss.loss import CrossEntropyLoss

from bitcpm_ms.training.kd_loss import (DistillLoss, FusedDistillLoss, ce_reference, distill_grad_reference,
                                        distill_loss_cell, kd_loss_reference, log_softmax_np)

N, V = 7, 13
MASK = np.array([1, 1, 0, 1, 1, 0, 1], np.float32)        # pad tokens (0) do not count


def _logits(seed, n=N, v=V, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, v)) * scale).astype(np.float32)


LABELS = np.random.default_rng(9).integers(0, V, N).astype(np.int32)

# the MindSpore op chain, and the fused CPU kernels (cpu_fused_ops) that must give the same loss and gradient
LOSSES = {"ops": DistillLoss, "fused": lambda temperature=1.0, alpha=0.5: FusedDistillLoss(DistillLoss(temperature, alpha))}


def _run(loss, s, t, labels=LABELS, mask=MASK):
    out = loss(ms.Tensor(s), ms.Tensor(t), ms.Tensor(labels), ms.Tensor(mask))
    return [float(x.asnumpy()) for x in out[:3]]


def test_reference_is_the_textbook_kl():
    s, t = _logits(0, 1, 5), _logits(1, 1, 5)
    pt = np.exp(log_softmax_np(t / 2.0))[0]
    ps = np.exp(log_softmax_np(s / 2.0))[0]
    by_hand = 4.0 * sum(pt[i] * np.log(pt[i] / ps[i]) for i in range(5))
    assert kd_loss_reference(s, t, temperature=2.0) == pytest.approx(by_hand, rel=1e-7)
    assert kd_loss_reference(t, t, temperature=3.0) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("run_mode, temperature, alpha", [
    (ms.PYNATIVE_MODE, 1.0, 0.5), (ms.PYNATIVE_MODE, 0.5, 1.0), (ms.GRAPH_MODE, 2.0, 0.3)],
    ids=["pynative-T1", "pynative-T0.5-kd-only", "graph-T2"])
@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_distill_loss_matches_numpy_reference(run_mode, temperature, alpha, kind):
    ms.set_context(mode=run_mode)
    try:
        s, t = _logits(2), _logits(3)
        loss, ce, kd = _run(LOSSES[kind](temperature, alpha), s, t)
        want_ce, want_kd = ce_reference(s, LABELS, MASK), kd_loss_reference(s, t, MASK, temperature)
        assert ce == pytest.approx(want_ce, rel=2e-6)
        assert kd == pytest.approx(want_kd, rel=2e-5, abs=1e-6)
        assert loss == pytest.approx((1 - alpha) * want_ce + alpha * want_kd, rel=2e-5)
        s2 = s.copy()                                # masked rows are ignored: changing them changes nothing
        s2[2] += 100.0
        assert _run(LOSSES[kind](temperature, alpha), s2, t)[0] == pytest.approx(loss, rel=1e-6)
    finally:
        ms.set_context(mode=ms.GRAPH_MODE)


def test_cross_entropy_term_equals_mindformers_loss():
    s, t = _logits(4), _logits(5)
    mf = float(CrossEntropyLoss()(ms.Tensor(s), ms.Tensor(LABELS), ms.Tensor(MASK)).asnumpy())
    assert _run(DistillLoss(1.0, 0.5), s, t)[1] == pytest.approx(mf, rel=1e-6)


class LossOnly(nn.Cell):
    """How the distilling model uses DistillLoss: the total is differentiated, CE / KD only logged."""

    def __init__(self, temperature, alpha, kind="ops"):
        super().__init__()
        self.loss = LOSSES[kind](temperature, alpha)

    def construct(self, s, t, labels, mask):
        loss, ce, kd = self.loss(s, t, labels, mask)[:3]
        return loss + ops.stop_gradient(ce) * 0 + ops.stop_gradient(kd) * 0


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_gradient_matches_closed_form_and_skips_the_teacher(mode, temperature, kind):
    s, t = _logits(6), _logits(7)
    grad = ms.grad(LossOnly(temperature, 0.4, kind), grad_position=(0, 1))
    gs, gt = grad(ms.Tensor(s), ms.Tensor(t), ms.Tensor(LABELS), ms.Tensor(MASK))
    want = distill_grad_reference(s, t, LABELS, MASK, temperature, 0.4)
    np.testing.assert_allclose(gs.asnumpy(), want, rtol=1e-4, atol=1e-7)
    assert float(np.abs(gt.asnumpy()).max()) == 0.0        # no gradient flows into the teacher


@pytest.mark.parametrize("kwargs, match", [({"temperature": 0.0}, "temperature"), ({"alpha": 1.5}, "alpha")])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DistillLoss(**kwargs)


def test_fused_loss_is_chosen_by_cpu_fused_ops():
    assert isinstance(distill_loss_cell(2.0, 0.5, True), FusedDistillLoss)
    assert isinstance(distill_loss_cell(2.0, 0.5, ["attention"]), DistillLoss)      # cross_entropy off
    assert type(distill_loss_cell(2.0, 0.5, None)) is DistillLoss
