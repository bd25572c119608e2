"""BitCPMTrainOneStepCell: non-finite steps are skipped and counted, clipping bounds the update,
the learning rate comes from the schedule, outputs follow MindFormers' 5-tuple."""
import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn
from mindspore.nn.learning_rate_schedule import PolynomialDecayLR

from bitcpm_ms.training import BitCPMTrainOneStepCell


class _Dot(nn.Cell):
    """loss = sum(w * x): d loss / d w = x, so the input controls the gradient exactly."""

    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(np.ones(4, np.float32)), name="w")

    def construct(self, x):
        return (self.w * x).sum()


def _step(lr=0.1, **kw):
    net = _Dot()
    return net, BitCPMTrainOneStepCell(net, nn.SGD(net.trainable_params(), learning_rate=lr), **kw)


def test_non_finite_gradient_skips_update_and_counts():
    net, step = _step(use_clip_grad=False)
    loss, overflow, scale, lr, gnorm = step(Tensor(np.array([1, np.inf, 0, 0], np.float32)))
    assert bool(overflow.asnumpy()) and not np.isfinite(float(gnorm.asnumpy()))
    np.testing.assert_array_equal(net.w.asnumpy(), np.ones(4, np.float32))      # untouched
    assert int(step.skipped_steps.asnumpy()) == 1
    loss, overflow, *_ = step(Tensor(np.array([1, 2, 0, 0], np.float32)))      # a finite step updates
    assert not bool(overflow.asnumpy())
    np.testing.assert_allclose(net.w.asnumpy(), [0.9, 0.8, 1, 1], rtol=1e-6)
    assert int(step.skipped_steps.asnumpy()) == 1


def test_clipping_by_global_norm_and_reported_norm():
    net, step = _step(use_clip_grad=True, max_grad_norm=1.0)
    x = np.array([3, 4, 0, 0], np.float32)                                        # |grad| = 5
    _, _, _, _, gnorm = step(Tensor(x))
    assert abs(float(gnorm.asnumpy()) - 5.0) < 1e-5
    np.testing.assert_allclose(net.w.asnumpy(), 1 - 0.1 * x / 5.0, rtol=1e-6)     # clipped to norm 1


def test_static_loss_scale_is_undone_before_the_update():
    net, step = _step(use_clip_grad=False, scale_sense=1024.0)
    _, _, scale, _, gnorm = step(Tensor(np.array([1, 0, 0, 0], np.float32)))
    assert float(scale.asnumpy()) == 1024.0 and abs(float(gnorm.asnumpy()) - 1.0) < 1e-6
    np.testing.assert_allclose(net.w.asnumpy(), [0.9, 1, 1, 1], rtol=1e-6)


def test_learning_rate_output_follows_the_schedule():
    sched = PolynomialDecayLR(learning_rate=0.1, end_learning_rate=0.0, decay_steps=4, power=1.0)
    net = _Dot()
    step = BitCPMTrainOneStepCell(net, nn.SGD(net.trainable_params(), learning_rate=sched), use_clip_grad=False)
    lrs = [float(step(Tensor(np.zeros(4, np.float32)))[3].asnumpy()) for _ in range(3)]
    np.testing.assert_allclose(lrs, [0.1, 0.075, 0.05], rtol=1e-6)
    assert ms.get_context("mode") == ms.GRAPH_MODE
