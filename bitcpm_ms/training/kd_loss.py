"""Knowledge-distillation loss on logits: numpy references and the graph-mode Cell `DistillLoss`.

Choice (BitCPM-CANN section 3.3 does not state one):

    KD = T^2 * sum_tokens mask * KL(p_T || p_S) / sum_tokens mask,
    p_T = softmax(teacher_logits / T),  p_S = softmax(student_logits / T),
    KL(p_T || p_S) = sum_vocab p_T * (log p_T - log p_S)      (nats per token)

* Forward KL (teacher || student), Hinton et al. 2015: the student is pulled to cover every
  token the teacher gives mass to. That is what a ternary student recovering a full-precision
  model's distribution needs (it is scored on likelihood, i.e. on the whole distribution); reverse
  KL (MiniLLM) is mode-seeking and suits free generation by much smaller students.
* T^2: the gradient of KL on logits / T scales as 1/T^2, so T^2 keeps the KD gradient of the same
  size as the cross-entropy's for every temperature (Hinton et al.), and `alpha` keeps its meaning.
* Mean over the tokens the cross-entropy counts (the same pad mask and denominator as MindFormers'
  CrossEntropyLoss, sum(mask) + 1e-8), summed over the vocabulary: KD is in nats per token like
  CE, and does not depend on batch size, sequence length or vocabulary size.

The teacher's logits enter without gradient (`ops.stop_gradient` in the caller; here only the
student side is differentiated). Log-softmax uses MindSpore's fused LogSoftmax kernel.
"""
import numpy as np
import mindspore as ms
from mindspore import nn
from mindspore.ops import operations as P

from ..fused import FusionConfig, cpu_fusions_available

from ..fused.ops import FusedDistill


def log_softmax_np(x: np.ndarray) -> np.ndarray:
    """log softmax over the last axis in float64 (max-subtracted)."""
    x = np.asarray(x, np.float64)
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def kd_loss_reference(student_logits, teacher_logits, mask=None, temperature: float = 1.0) -> float:
    """The KD loss above in numpy (float64). logits: [..., V]; mask: [...] (1 = counted token)."""
    t = float(temperature)
    log_ps = log_softmax_np(np.asarray(student_logits) / t)
    log_pt = log_softmax_np(np.asarray(teacher_logits) / t)
    kl = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=-1)           # [...]
    m = np.ones(kl.shape) if mask is None else np.asarray(mask, np.float64).reshape(kl.shape)
    return float(t * t * (kl * m).sum() / (m.sum() + 1e-8))


def kd_grad_reference(student_logits, teacher_logits, mask=None, temperature: float = 1.0) -> np.ndarray:
    """d KD / d student_logits: T * (p_S - p_T) * mask / sum(mask) (the closed form of the KL gradient)."""
    t = float(temperature)
    ps = np.exp(log_softmax_np(np.asarray(student_logits) / t))
    pt = np.exp(log_softmax_np(np.asarray(teacher_logits) / t))
    m = np.ones(ps.shape[:-1]) if mask is None else np.asarray(mask, np.float64).reshape(ps.shape[:-1])
    return t * (ps - pt) * m[..., None] / (m.sum() + 1e-8)


def ce_reference(student_logits, labels, mask=None) -> float:
    """Mean cross-entropy (nats) over counted tokens, as MindFormers' CrossEntropyLoss (float64)."""
    log_ps = log_softmax_np(student_logits)
    labels = np.asarray(labels).reshape(-1)
    nll = -log_ps.reshape(len(labels), -1)[np.arange(len(labels)), labels]
    m = np.ones(nll.shape) if mask is None else np.asarray(mask, np.float64).reshape(nll.shape)
    return float((nll * m).sum() / (m.sum() + 1e-8))


def distill_grad_reference(student_logits, teacher_logits, labels, mask, temperature, alpha) -> np.ndarray:
    """d loss / d student_logits of loss = (1 - alpha) CE + alpha KD."""
    ps = np.exp(log_softmax_np(student_logits))
    onehot = np.eye(ps.shape[-1])[np.asarray(labels).reshape(-1)]
    m = np.asarray(mask, np.float64).reshape(-1)
    ce_grad = (ps - onehot) * m[:, None] / (m.sum() + 1e-8)
    return (1 - alpha) * ce_grad + alpha * kd_grad_reference(student_logits, teacher_logits, mask, temperature)


class DistillLoss(nn.Cell):
    """loss = (1 - alpha) * CE(student, labels) + alpha * KD(student, teacher), and both terms.

    CE is MindFormers' (mean over counted tokens, denominator sum(mask) + 1e-8); KD is the module
    docstring's, over the same tokens. Built for speed on the [tokens x vocab] logits, where every
    full pass costs (benchmarks/distill_overhead.py): softmaxes instead of log-softmaxes (MindSpore's
    CPU LogSoftmaxGrad is several times slower than a Softmax), the log-sum-exp of a row taken from
    its softmax (lse = max(x) - log(max(softmax(x))): the largest probability is >= 1/V, so the log
    is safe), KL(p_T || p_S) = sum p_T (t - s) / T - lse(t / T) + lse(s / T), and a custom bprop with
    the closed-form gradient  mask/den * [c_ce (p_S - onehot) + c_kd T (p_S,T - p_T,T)].

    Inputs: student_logits [N, V] float32, teacher_logits [N, V] float32 (no gradient flows into
    it), labels [N] int32, mask [N] float32. Outputs: (loss, ce, kd) scalars, then the softmaxes
    (p_S, p_S,T, p_T) [N, V] that the backward reuses (gradients are taken of loss, ce and kd only).
    """

    def __init__(self, temperature: float = 1.0, alpha: float = 0.5):
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"KD temperature must be positive, got {temperature}")
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"distill alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha = float(temperature), float(alpha)
        self.inv_t = 1.0 / self.temperature
        self.t2 = self.temperature * self.temperature
        self.softmax = P.Softmax(axis=-1)
        self.max_last = P.ReduceMax(keep_dims=False)
        self.log = P.Log()
        self.gather = P.GatherD()
        self.sum_last = P.ReduceSum(keep_dims=False)
        self.sum_all = P.ReduceSum(keep_dims=False)
        self.expand = P.ExpandDims()
        self.reshape = P.Reshape()
        self.scatter_sub = P.TensorScatterSub()
        self.concat = P.Concat(axis=1)
        self.range = P.Range()
        self.zeros_like = P.ZerosLike()
        self.cast = P.Cast()

    def _lse(self, x, p):
        """log-sum-exp of each row of x [N, V] given p = softmax(x): [N]."""
        return self.max_last(x, -1) - self.log(self.max_last(p, -1))

    def construct(self, student_logits, teacher_logits, labels, mask):
        s, t = student_logits, teacher_logits
        ps = self.softmax(s)                                                           # [N, V]
        lse_s = self._lse(s, ps)                                                       # [N]
        s_label = self.reshape(self.gather(s, 1, self.expand(labels, -1)), (-1,))      # [N]
        den = self.sum_all(mask) + 1e-8
        ce = self.sum_all((lse_s - s_label) * mask) / den
        ps_t = ps
        if self.temperature != 1.0:
            s = s * self.inv_t
            t = t * self.inv_t
            ps_t = self.softmax(s)
            lse_s = self._lse(s, ps_t)
        pt = self.softmax(t)
        kl = self.sum_last(pt * (t - s), -1) - self._lse(t, pt) + lse_s                # [N]
        kd = self.sum_all(kl * mask) * self.t2 / den
        return ce * (1.0 - self.alpha) + kd * self.alpha, ce, kd, ps, ps_t, pt

    def bprop(self, student_logits, teacher_logits, labels, mask, out, dout):
        # out[3:] are the forward's softmaxes, kept for this backward instead of recomputed
        ps, ps_t, pt = out[3], out[4], out[5]
        den = self.sum_all(mask) + 1e-8
        c_ce = self.expand(((1.0 - self.alpha) * dout[0] + dout[1]) * mask / den, -1)  # [N, 1]
        c_kd = self.expand((self.alpha * dout[0] + dout[2]) * self.temperature * mask / den, -1)
        if self.temperature != 1.0:
            grad = ps * c_ce + (ps_t - pt) * c_kd
        else:
            grad = ps * (c_ce + c_kd) - pt * c_kd
        n = labels.shape[0]
        rows = self.expand(self.cast(self.range(0, n, 1), labels.dtype), -1)           # [N, 1]
        index = self.concat((rows, self.expand(labels, -1)))                            # [N, 2]
        grad = self.scatter_sub(grad, index, self.reshape(c_ce, (-1,)))                # - c_ce * onehot
        return grad, self.zeros_like(teacher_logits), self.zeros_like(labels), self.zeros_like(mask)


class FusedDistillLoss(nn.Cell):
    """DistillLoss on the fused CPU kernels (`cpu_fused_ops` with cross_entropy on): the same loss, CE and
    KD, from one row-wise C++ op (FusedDistill: per-token CE and KL, one read of each logits row
    forward, one gradient written backward). MindSpore's op chain of DistillLoss spends most of its
    time in ReduceMax over [tokens x vocab] (six of them, 60-80 ms each on the tiny config's
    2048 x 8192 logits; docs/recipe.md, "Speed"). Returns (loss, ce, kd).
    Non-float32 or non-2-D logits run `fallback`, the DistillLoss it replaces."""

    def __init__(self, fallback: DistillLoss):
        super().__init__()
        self.fallback = fallback
        self.alpha, self.t2 = fallback.alpha, fallback.t2
        self.op = FusedDistill(fallback.temperature)
        self.sum_all = P.ReduceSum(keep_dims=False)
        self.cast = P.Cast()

    def construct(self, student_logits, teacher_logits, labels, mask):
        if student_logits.dtype != ms.float32 or student_logits.ndim != 2:
            return self.fallback(student_logits, teacher_logits, labels, mask)[:3]
        ce_rows, kl_rows, _ = self.op(student_logits, teacher_logits, self.cast(labels, ms.int32))   # [N] each
        den = self.sum_all(mask) + 1e-8
        ce = self.sum_all(ce_rows * mask) / den
        kd = self.sum_all(kl_rows * mask) * self.t2 / den
        return ce * (1.0 - self.alpha) + kd * self.alpha, ce, kd


def distill_loss_cell(temperature: float, alpha: float, cpu_fused_ops=None) -> nn.Cell:
    """The distillation loss Cell: FusedDistillLoss where the model's `cpu_fused_ops` enables the fused
    cross-entropy and the fused ops can run (CPU, stand-alone or data parallel), else DistillLoss."""
    loss = DistillLoss(temperature, alpha)
    if FusionConfig.from_value(cpu_fused_ops).cross_entropy and cpu_fusions_available() is None:
        return FusedDistillLoss(loss)
    return loss
