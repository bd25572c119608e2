"""Quantizer Cells: fake quantization in the forward pass, straight-through estimator backward.

The forward traces the formulas of `primitives.py` with MindSpore primitives (so each can carry a
semi-auto-parallel strategy); the backward is a custom `bprop` returning the incoming gradient
unchanged, so the optimizer updates the latent full-precision weight exactly as if the layer
were not quantized (report section 3.2: "backward is the identity").
"""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn
from mindspore.ops import operations as P

from .primitives import SPACES
from ..kernels.ops import get_fake_quant_op


class WeightFakeQuant(nn.Cell):
    """[out, in] latent weight -> dequantized weight (levels x group scale), STE backward.

    Also takes the grouped view [out, in/g, g] and returns the same shape: `TernaryLinear` does the
    grouping reshape itself, so that a plain op, not this custom-bprop Cell, is the parameter's
    first user under semi-auto parallelism (docs/distributed.md, "Gradient communication of the
    quantized weights").
    group_size must already be resolved to a positive divisor of `in` (see QuantConfig.group_for).
    Under tensor parallelism each rank sees its local weight shard; with `group_size` dividing the
    local input width the shard-local scales equal the global ones (report section 4.2).
    """

    def __init__(self, quant_space: str, group_size: int, eps: float, fused_cpu_kernel: bool = True):
        super().__init__()
        if quant_space not in SPACES:
            raise ValueError(f"unknown quantization space {quant_space!r}")
        if group_size <= 0:
            raise ValueError(f"group_size must be resolved to a positive integer, got {group_size}")
        self.spec = SPACES[quant_space]
        self.quant_space = quant_space
        self.group_size = group_size
        self.eps = float(eps)
        self.reshape = P.Reshape()
        self.abs = P.Abs()
        self.reduce = P.ReduceMean(keep_dims=True) if self.spec.statistic == "mean" else P.ReduceMax(keep_dims=True)
        self.stat_div = P.RealDiv()
        self.floor_eps = P.Maximum()
        self.div = P.RealDiv()
        self.round = P.Floor() if self.spec.half_integer else P.Round()
        self.half_shift = P.Add()
        self.clip_hi = P.Minimum()
        self.clip_lo = P.Maximum()
        self.mul = P.Mul()
        self.zero_fix = P.Select()
        self.equal = P.Equal()
        self.ge = P.GreaterEqual()
        self.sign_select = P.Select()
        self.ones_like = P.OnesLike()
        self.neg = P.Neg()
        # On CPU the ternary formula runs as one fused C++ pass (TernaryFakeQuant AOT op) instead
        # of ~9 element-wise ops: the op chain cost 9% of a tiny-model training step, the fused
        # op ~1% (benchmarks/qat_overhead.py). Elsewhere (Ascend, or any semi-/auto-parallel
        # mode) the primitive chain is kept: it carries the shard strategies.
        self.fused = (fused_cpu_kernel and quant_space == "ternary"
                      and ms.get_context("device_target") == "CPU"
                      and ms.get_auto_parallel_context("parallel_mode") in ("stand_alone", "data_parallel"))
        if self.fused:
            self.fused_op = get_fake_quant_op()
            self.fused_spec = Tensor(np.array([[group_size, eps]], np.float32))

    def construct(self, w):
        if self.fused:
            return self.fused_op(w, self.fused_spec)
        if len(w.shape) == 3:            # already the grouped view [out, in/g, g] (TernaryLinear)
            return self.quantize_groups(w)
        out_f, in_f = w.shape
        wg = self.reshape(w, (out_f, in_f // self.group_size, self.group_size))  # [out, in/g, g]
        return self.reshape(self.quantize_groups(wg), (out_f, in_f))

    def quantize_groups(self, wg):
        """[out, in/g, g] latent weight -> [out, in/g, g] dequantized weight."""
        stat = self.reduce(self.abs(wg), -1)                                      # [out, in/g, 1]
        if self.spec.divisor != 1.0:
            stat = self.stat_div(stat, self.spec.divisor)
        s = self.floor_eps(stat, self.eps)
        x = self.div(wg, s)
        lv = self.round(x)
        if self.spec.half_integer:
            lv = self.half_shift(lv, 0.5)
        if self.spec.no_zero:
            ones = self.ones_like(x)
            sign = self.sign_select(self.ge(x, 0.0), ones, self.neg(ones))
            lv = self.zero_fix(self.equal(lv, 0.0), sign, lv)
        lv = self.clip_lo(self.clip_hi(lv, float(self.spec.hi)), float(self.spec.lo))
        return self.mul(lv, s)

    def bprop(self, w, out, dout):
        """Straight-through estimator: d(loss)/d(latent w) = d(loss)/d(quantized w)."""
        return (dout,)

    def shard(self, weight_strategy):
        """Shard every op like the [out, in] weight: (a, b) -> (a, b, 1) on the grouped view.
        (Parallel modes run on Ascend/GPU, where the fused CPU op is never used.)"""
        a, b = weight_strategy
        grouped = (a, b, 1)
        for prim in (self.abs, self.reduce, self.round):
            prim.shard((grouped,))
        for prim in (self.stat_div, self.floor_eps, self.half_shift, self.clip_hi, self.clip_lo):
            prim.shard((grouped, ()))
        self.div.shard((grouped, grouped))
        self.mul.shard((grouped, grouped))
        self.equal.shard((grouped, ()))
        self.ge.shard((grouped, ()))
        self.ones_like.shard((grouped,))
        self.neg.shard((grouped,))
        self.sign_select.shard((grouped, grouped, grouped))
        self.zero_fix.shard((grouped, grouped, grouped))
        return self

    def extend_repr(self):
        return (f"quant_space={self.quant_space}, group_size={self.group_size}, eps={self.eps}, "
                f"fused_cpu_kernel={self.fused}")


class ActFakeQuant(nn.Cell):
    """Per-token absmax activation fake quantization (BitNet b1.58), STE backward.

    x [tokens, features] -> clip(round(x * s), -Qp-1, Qp) / s, s = Qp / max(|x|, eps) per token.
    """

    def __init__(self, bits: int, eps: float = 1e-5):
        super().__init__()
        if bits not in (4, 8):
            raise ValueError(f"activation bits must be 4 or 8, got {bits}")
        self.bits = bits
        self.qp = float(2 ** (bits - 1) - 1)
        self.eps = float(eps)
        self.abs = P.Abs()
        self.amax = P.ReduceMax(keep_dims=True)
        self.floor_eps = P.Maximum()
        self.inv = P.RealDiv()
        self.mul = P.Mul()
        self.round = P.Round()
        self.clip_hi = P.Minimum()
        self.clip_lo = P.Maximum()
        self.div = P.RealDiv()

    def construct(self, x):
        s = self.inv(self.qp, self.floor_eps(self.amax(self.abs(x), -1), self.eps))   # [tokens, 1]
        xq = self.clip_lo(self.clip_hi(self.round(self.mul(x, s)), self.qp), -self.qp - 1.0)
        return self.div(xq, s)

    def bprop(self, x, out, dout):
        return (dout,)

    def shard(self, act_strategy):
        """act_strategy: the matmul's input strategy (rows, features) for x [tokens, features]."""
        rows, cols = act_strategy
        full, reduced = (rows, cols), (rows, 1)
        self.abs.shard((full,))
        self.amax.shard((full,))
        self.floor_eps.shard((reduced, ()))
        self.inv.shard(((), reduced))
        self.mul.shard((full, reduced))
        self.round.shard((full,))
        self.clip_hi.shard((full, ()))
        self.clip_lo.shard((full, ()))
        self.div.shard((full, reduced))
        return self

    def extend_repr(self):
        return f"bits={self.bits}, eps={self.eps}"
