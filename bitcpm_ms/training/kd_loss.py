"""Knowledge-distillation loss on logits: a numpy reference and the graph-mode Cell.

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
* Mean over the tokens the cross-entropy counts (the same pad mask), summed over the vocabulary:
  KD is in nats per token like CE, and does not depend on batch size, sequence length or vocab.

The teacher's logits enter without gradient (`ops.stop_gradient` in the caller; here only the
student side is differentiated). Log-softmax uses MindSpore's fused LogSoftmax kernel.
"""
import numpy as np
from mindspore import nn, ops
from mindspore.ops import operations as P


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
    return float(t * t * (kl * m).sum() / max(m.sum(), 1.0))


def kd_grad_reference(student_logits, teacher_logits, mask=None, temperature: float = 1.0) -> np.ndarray:
    """d KD / d student_logits: T * (p_S - p_T) * mask / sum(mask) (the closed form of the KL gradient)."""
    t = float(temperature)
    ps = np.exp(log_softmax_np(np.asarray(student_logits) / t))
    pt = np.exp(log_softmax_np(np.asarray(teacher_logits) / t))
    m = np.ones(ps.shape[:-1]) if mask is None else np.asarray(mask, np.float64).reshape(ps.shape[:-1])
    return t * (ps - pt) * m[..., None] / max(m.sum(), 1.0)


class KDLoss(nn.Cell):
    """T^2-scaled forward KL(teacher || student) per counted token (see module docstring).

    Inputs: student_logits [N, V] float32, teacher_logits [N, V] float32 (no gradient needed),
    mask [N] float32 (1 for tokens the cross-entropy counts). Output: scalar float32.
    """

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if not float(temperature) > 0:
            raise ValueError(f"KD temperature must be positive, got {temperature}")
        self.temperature = float(temperature)
        self.inv_t = 1.0 / self.temperature
        self.t2 = self.temperature * self.temperature
        self.log_softmax = P.LogSoftmax(axis=-1)
        self.exp = P.Exp()
        self.sum_last = P.ReduceSum(keep_dims=False)
        self.sum_all = P.ReduceSum(keep_dims=False)
        self.maximum = P.Maximum()

    def construct(self, student_logits, teacher_logits, mask):
        if self.temperature != 1.0:
            student_logits = student_logits * self.inv_t
            teacher_logits = teacher_logits * self.inv_t
        log_ps = self.log_softmax(student_logits)                              # [N, V]
        log_pt = ops.stop_gradient(self.log_softmax(teacher_logits))           # [N, V]
        kl = self.sum_last(self.exp(log_pt) * (log_pt - log_ps), -1)           # [N]
        den = self.maximum(self.sum_all(mask), 1.0)
        return self.sum_all(kl * mask) * self.t2 / den

