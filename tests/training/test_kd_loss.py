"""The KD loss (T^2 KL(teacher || student) per counted token) against its numpy reference."""
import numpy as np
import pytest
import mindspore as ms

from bitcpm_ms.training.kd_loss import KDLoss, kd_grad_reference, kd_loss_reference, log_softmax_np


def _logits(seed, n=7, v=13, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, v)) * scale).astype(np.float32)


def _ms_loss(s, t, mask, temperature):
    return KDLoss(temperature)(ms.Tensor(s), ms.Tensor(t), ms.Tensor(mask))


def test_reference_is_the_textbook_kl():
    s, t = _logits(0, 1, 5), _logits(1, 1, 5)
    pt = np.exp(log_softmax_np(t / 2.0))[0]
    ps = np.exp(log_softmax_np(s / 2.0))[0]
    by_hand = 4.0 * sum(pt[i] * np.log(pt[i] / ps[i]) for i in range(5))
    assert kd_loss_reference(s, t, temperature=2.0) == pytest.approx(by_hand, rel=1e-12)
    assert kd_loss_reference(t, t, temperature=3.0) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("run_mode, temperature", [(ms.PYNATIVE_MODE, 1.0), (ms.PYNATIVE_MODE, 0.5),
                                                   (ms.GRAPH_MODE, 2.0)], ids=["pynative-T1", "pynative-T0.5",
                                                                                "graph-T2"])
def test_kd_loss_matches_numpy_reference(run_mode, temperature):
    ms.set_context(mode=run_mode)
    s, t = _logits(2), _logits(3)
    mask = np.array([1, 1, 0, 1, 1, 0, 1], np.float32)      # pad tokens do not count
    got = float(_ms_loss(s, t, mask, temperature).asnumpy())
    want = kd_loss_reference(s, t, mask, temperature)
    assert got == pytest.approx(want, rel=2e-5, abs=1e-6)
    # masked rows are ignored: changing them changes nothing
    s2 = s.copy()
    s2[2] += 100.0
    assert float(_ms_loss(s2, t, mask, temperature).asnumpy()) == pytest.approx(got, rel=1e-6)
    ms.set_context(mode=ms.GRAPH_MODE)


def test_gradient_is_t_times_softmax_difference(mode):
    s, t = _logits(6), _logits(7)
    mask = np.array([1, 0, 1, 1, 1, 1, 0], np.float32)
    loss = KDLoss(2.0)
    grad = ms.grad(loss, grad_position=(0, 1))
    gs, gt = grad(ms.Tensor(s), ms.Tensor(t), ms.Tensor(mask))
    np.testing.assert_allclose(gs.asnumpy(), kd_grad_reference(s, t, mask, 2.0), rtol=1e-4, atol=1e-7)
    assert float(np.abs(gt.asnumpy()).max()) == 0.0        # no gradient flows into the teacher


def test_bad_temperature_is_refused():
    with pytest.raises(ValueError, match="temperature"):
        KDLoss(0.0)
