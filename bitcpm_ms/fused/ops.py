"""The fused kernels as MindSpore ops: AOT ``ops.Custom`` primitives over
``libbitcpm_fused_train.so``, each forward paired with its backward kernel in a Cell's ``bprop``.

Each Cell here is one op with a fixed signature (float32 only); the drop-in replacements for
MindFormers' modules, with their fallbacks, are in ``cells.py``. Shapes are checked by name when a
graph is built (the ops' shape inference), so an unsupported shape raises FusedOpError there and
never reaches a kernel with wrong sizes.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from . import library
from .errors import FusedOpError

_F32 = ms.float32


def _custom(func_name: str, out_shape, n_out: int):
    """An AOT op of the library. Backward passes are Cell `bprop` methods (not ops.Custom's bprop
    closures, which MindFormers' Trainer graphs cannot resolve)."""
    dtype = (lambda *a: (_F32,) * n_out) if n_out > 1 else (lambda *a: _F32)
    library.load()          # settings from the environment apply before the first call
    return ops.Custom(f"{library.path()}:{func_name}", out_shape=out_shape, out_dtype=dtype, func_type="aot")


def cpu_fusions_available() -> Optional[str]:
    """None when the fused ops can run here, else why not."""
    if ms.get_context("device_target") != "CPU":
        return f"device_target is {ms.get_context('device_target')}, not CPU"
    mode = ms.get_auto_parallel_context("parallel_mode")
    if mode not in ("stand_alone", "data_parallel"):
        return f"parallel_mode {mode} (the fused ops carry no shard strategies)"
    return None


def _known(*dims) -> bool:
    """All dims static (graph mode may pass -1 / -2 for dynamic shapes; those are checked in C++)."""
    return all(isinstance(d, int) and d >= 0 for d in dims)


def _numel(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


# ---------------------------------------------------------------- cross-entropy
def _ce_shape(logits, labels):
    if len(logits) != 2:
        raise FusedOpError(f"FusedCrossEntropy: logits must be 2-D [tokens, vocab], got shape {list(logits)}")
    if _known(*logits, *labels) and _numel(labels) != logits[0]:
        raise FusedOpError(f"FusedCrossEntropy: labels {list(labels)} must hold one id per row of logits {list(logits)}")
    return [logits[0]], [logits[0]]


class FusedCrossEntropy(nn.Cell):
    """(logits [N, V] f32, labels [N] i32) -> (loss [N], lse [N]): MindFormers' per-token
    cross-entropy (0 for labels outside [0, V)) and the row log-sum-exp, one pass over the logits
    forward and one backward (dlogits = softmax * (dloss + dlse) - onehot * dloss)."""

    def __init__(self):
        super().__init__()
        self.fwd = _custom("FusedCrossEntropyFwd", _ce_shape, 2)
        self.bwd = _custom("FusedCrossEntropyBwd", lambda l, y, lse, d, dl: l, 1)
        self.zeros_like = ops.ZerosLike()

    def construct(self, logits, labels):
        return self.fwd(logits, labels)

    def bprop(self, logits, labels, out, dout):
        return self.bwd(logits, labels, out[1], dout[0], dout[1]), self.zeros_like(labels)


# ---------------------------------------------------------------- distillation (CE + KL)
def _distill_shape(s, t, labels, spec):
    if len(s) != 2 or len(t) != 2 or (_known(*s, *t) and list(s) != list(t)):
        raise FusedOpError(f"FusedDistill: student {list(s)} and teacher {list(t)} logits must both be [tokens, vocab]")
    if _known(*s, *labels) and _numel(labels) != s[0]:
        raise FusedOpError(f"FusedDistill: labels {list(labels)} must hold one id per row of the logits {list(s)}")
    return [s[0]], [s[0]], [s[0], 3]


class FusedDistill(nn.Cell):
    """(student [N, V] f32, teacher [N, V] f32, labels [N] i32) -> (ce [N], kl [N], stats [N, 3]):
    per-token cross-entropy of the student (MindFormers' CrossEntropyLoss term) and
    KL(softmax(t/T) || softmax(s/T)), from one read of each logits row; stats (three log-sum-exps)
    are kept for the backward, which writes ds = dce (softmax(s) - onehot) + dkl / T (softmax(s/T) -
    softmax(t/T)) in one pass. Gradients are taken of ce and kl; the teacher gets none."""

    def __init__(self, temperature: float):
        super().__init__()
        if not float(temperature) > 0:
            raise FusedOpError(f"FusedDistill: temperature must be positive, got {temperature}")
        self.spec = Tensor(np.array([1.0 / float(temperature)], np.float32))
        self.fwd = _custom("FusedDistillFwd", _distill_shape, 3)
        self.bwd = _custom("FusedDistillBwd", lambda s, t, y, spec, st, dc, dk: s, 1)
        self.zeros_like = ops.ZerosLike()

    def construct(self, student, teacher, labels):
        return self.fwd(student, teacher, labels, self.spec)

    def bprop(self, student, teacher, labels, out, dout):
        ds = self.bwd(student, teacher, labels, self.spec, out[2], dout[0], dout[1])
        return ds, self.zeros_like(teacher), self.zeros_like(labels)


# ---------------------------------------------------------------- RMSNorm
def _rms_shape(x, w, spec):
    if len(x) < 1 or (_known(*x, *w) and _numel(w) != x[-1]):
        raise FusedOpError(f"FusedRMSNorm: weight {list(w)} must match the last dim of x {list(x)}")
    return list(x), list(x[:-1]) if len(x) > 1 else [1]


class FusedRMSNorm(nn.Cell):
    """(x [..., D] f32, weight [D] f32) -> (y, rstd): y = x / sqrt(mean(x^2) + eps) * weight
    (LlamaRMSNorm's non-fused formula), rstd [rows] kept for the backward, which gives dx and
    dweight (dweight summed in a fixed order). Callers use y; rstd gets no gradient."""

    def __init__(self, eps: float):
        super().__init__()
        self.spec = Tensor(np.array([eps], np.float32))
        self.fwd = _custom("FusedRmsNormFwd", _rms_shape, 2)
        self.bwd = _custom("FusedRmsNormBwd", lambda x, w, r, dy: (x, w), 2)

    def construct(self, x, weight):
        return self.fwd(x, weight, self.spec)

    def bprop(self, x, weight, out, dout):
        dx, dw = self.bwd(x, weight, out[1], dout[0])
        return dx, dw


# ---------------------------------------------------------------- SwiGLU
def _same_shape(name):
    def infer(g, u):
        if _known(*g, *u) and list(g) != list(u):
            raise FusedOpError(f"{name}: gate {list(g)} and up {list(u)} projections differ in shape")
        return list(g)
    return infer


class FusedSwiGLU(nn.Cell):
    """(gate, up) -> silu(gate) * up, elementwise; backward recomputes the sigmoid."""

    def __init__(self):
        super().__init__()
        self.fwd = _custom("FusedSwigluFwd", _same_shape("FusedSwiGLU"), 1)
        self.bwd = _custom("FusedSwigluBwd", lambda g, u, dh: (g, g), 2)

    def construct(self, gate, up):
        return self.fwd(gate, up)

    def bprop(self, gate, up, out, dout):
        dg, du = self.bwd(gate, up, dout)
        return dg, du


# ---------------------------------------------------------------- gradient norm
def sum_squares_op():
    """AOT op x -> sum(x^2) (float32 [1]) for float32 x, one C++ pass; None off CPU or in
    (semi-)auto parallel, where the caller keeps MindSpore's Square + ReduceSum. No bprop: it
    reads gradients."""
    if cpu_fusions_available() is not None:
        return None
    return _custom("SumSquares", lambda x: [1], 1)


# ---------------------------------------------------------------- Linear matmul (OpenBLAS)
def _linear_shape(x, w):
    if len(x) != 2 or len(w) != 2:
        raise FusedOpError(f"BlasLinearMatMul: x and weight must be 2-D, got {list(x)} and {list(w)}")
    if _known(x[1], w[1]) and x[1] != w[1]:
        raise FusedOpError(f"BlasLinearMatMul: x {list(x)} and weight {list(w)} differ in the input width")
    return [x[0], w[0]]


class BlasLinearMatMul(nn.Cell):
    """(x [M, K], weight [N, K]) -> x weight^T, MindFormers Linear's `MatMul(transpose_b=True)`
    computed by OpenBLAS sgemm (scipy-openblas32); backward dx = dy weight, dweight = dy^T x, also
    through sgemm. Raises FusedOpError if no BLAS could be loaded (see library.blas_problem)."""

    def __init__(self):
        super().__init__()
        problem = library.blas_problem()
        if problem:
            raise FusedOpError(f"BlasLinearMatMul: {problem}")
        self.fwd = _custom("LinearFwd", _linear_shape, 1)
        self.dx = _custom("LinearDx", lambda dy, w: [dy[0], w[1]], 1)
        self.dw = _custom("LinearDw", lambda dy, x: [dy[1], x[1]], 1)

    def construct(self, x, weight):
        return self.fwd(x, weight)

    def bprop(self, x, weight, out, dout):
        return self.dx(dout, weight), self.dw(dout, x)


# ---------------------------------------------------------------- attention
def attention_shape_problem(q, k, v, cos, sin, mask, num_heads: int, n_kv_heads: int):
    """None if the shapes suit FusedAttention, else a sentence saying what does not."""
    if len(q) != 3 or len(k) != 3 or len(v) != 3:
        return f"q, k, v must be 3-D [batch, seq, heads*head_dim], got {list(q)}, {list(k)}, {list(v)}"
    if not _known(*q, *k, *v, *cos, *sin, *mask):
        return None
    b, s, width = q
    if num_heads <= 0 or n_kv_heads <= 0 or num_heads % n_kv_heads or width % num_heads:
        return f"num_heads={num_heads} must divide q's width {width} and be a multiple of n_kv_heads={n_kv_heads}"
    d = width // num_heads
    if d % 2:
        return f"head_dim={d} must be even (rotary embedding)"
    if list(k) != [b, s, n_kv_heads * d] or list(v) != list(k):
        return f"k {list(k)} and v {list(v)} must be [{b}, {s}, {n_kv_heads * d}]"
    for name, t in (("cos", cos), ("sin", sin)):
        if _numel(t) not in (s * d, b * s * d) or t[-1] != d or _numel(t) != _numel(cos):
            return (f"{name} {list(t)} must hold [batch={b} or 1, seq={s}, head_dim={d}] values (one position "
                    f"table for the batch, or one per row)")
    if _numel(mask) not in (s * s, b * s * s) or mask[-1] != s or mask[-2] != s:
        return f"mask {list(mask)} must be [batch or 1, 1, {s}, {s}] (additive)"
    return None


class FusedAttention(nn.Cell):
    """(q [B,S,H*D], k [B,S,Hkv*D], v, cos [S,D] or [B,1,S,D], sin, mask [B,1,S,S]) -> o [B,S,H*D]:
    rotary embedding, scaled scores plus the additive mask, softmax and the weighted values of
    MindFormers' LLaMA attention (GQA, no flash attention) in one kernel, with its backward.
    Per-row cos / sin tables (B of them) carry per-row positions: packed documents whose RoPE
    positions restart at every document (models/documents.py).
    Keys whose mask removes them are skipped only where that is exact (ops/fused_train/ft_attention.h)."""

    def __init__(self, num_heads: int, n_kv_heads: int, head_dim: int):
        super().__init__()
        self.num_heads, self.n_kv_heads, self.head_dim = int(num_heads), int(n_kv_heads), int(head_dim)
        scale = np.float32(1.0) / np.sqrt(np.float32(head_dim))
        self.spec = Tensor(np.array([num_heads, n_kv_heads, scale], np.float32))
        heads = self.num_heads, self.n_kv_heads

        def infer(q, k, v, cos, sin, mask, spec):
            problem = attention_shape_problem(q, k, v, cos, sin, mask, *heads)
            if problem:
                raise FusedOpError(f"FusedAttention: {problem}")
            return list(q), [q[0], heads[0], q[1], 2]

        self.fwd = _custom("FusedAttentionFwd", infer, 2)
        self.bwd = _custom("FusedAttentionBwd", lambda q, k, v, c, s, m, sp, o, st, do: (q, k, v), 3)
        self.zeros_like = ops.ZerosLike()

    def construct(self, q, k, v, cos, sin, mask):
        """-> (o [B,S,H*D], stats [B,H,S,2]); callers use o."""
        return self.fwd(q, k, v, cos, sin, mask, self.spec)

    def bprop(self, q, k, v, cos, sin, mask, out, dout):
        dq, dk, dv = self.bwd(q, k, v, cos, sin, mask, self.spec, out[0], out[1], dout[0])
        return dq, dk, dv, self.zeros_like(cos), self.zeros_like(sin), self.zeros_like(mask)
