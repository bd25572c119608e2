"""The global gradient norm and the skip-step flag, agreed on by every rank.

Under semi-auto parallelism a rank holds slices of the gradients (model / optimizer parallel) or
replicas of them (data parallel), so a norm summed on one rank is not the global norm, and a
non-finite flag decided on one rank is not every rank's decision. MindSpore fixes the norm in its
parallel pass: `HandleGlobalNormScale` (mindspore/ccsrc/frontend/parallel/parallel_postprocessor.cc)
starts from each gradient, follows only EnvironGet / Mul / Cast / Square / ReduceSum / SumExt /
ExpandDims nodes (at most 10 deep) to an `ExpandDims` carrying the attribute `grad_scale=True`,
divides that square sum by the parameter's number of replicas (the mirror's `dev_num`), and puts an
AllReduce over the stage's devices (and one between pipeline stages) in front of the `Sqrt` that
follows. MindFormers' `ClipGradNorm` (mindformers/core/clip_grad.py) carries the same tag.
`square_sums` is written with exactly those primitives; the flag is all-reduced the way MindSpore's
`TrainOneStepWithLossScaleCell` does it (mindspore/nn/wrap/loss_scale.py, `is_distributed`).

In stand-alone mode nothing is inserted, and in data-parallel mode the gradients are already
all-reduced before the norm, so both give exactly the single-process numbers.
"""
import mindspore as ms
from mindspore import nn
from mindspore.context import ParallelMode
from mindspore.ops import composite as C
from mindspore.ops import functional as F
from mindspore.ops import operations as P

# The marker MindSpore's parallel pass looks for (`GRAD_SCALE` in parallel_postprocessor.cc).
tag_for_global_norm = P.ExpandDims().add_prim_attr("grad_scale", True)
_cast = P.Cast()
_square = P.Square()
_reduce_sum = P.ReduceSum(keep_dims=False)
_sqrt = P.Sqrt()
_addn = P.AddN()
_reshape = P.Reshape()

square_sums = C.MultitypeFuncGraph("square_sums")


@square_sums.register("Tensor")
def _square_sum(grad):
    """sum(grad^2) in float32 as a [1] tensor, tagged for the cross-rank reduction."""
    return tag_for_global_norm(_reduce_sum(_square(_cast(grad, ms.float32))), 0)


@square_sums.register("Function", "Tensor")
def _square_sum_fused(op, grad):
    """sum(grad^2) by `op` (bitcpm_ms.fused's one-pass C++ kernel, float32 only; it is given only in
    stand-alone / data-parallel mode on CPU, where no cross-rank reduction is needed)."""
    if grad.dtype == ms.float32:
        return op(grad)
    return _square_sum(grad)


def global_norm(hyper_map, grads, sq_sum_op=None):
    """sqrt(sum over all gradients of sum(g^2)) as a scalar; `hyper_map` is the caller's C.HyperMap(),
    `sq_sum_op` an optional fused sum-of-squares op (None: MindSpore's tagged Square + ReduceSum)."""
    if sq_sum_op is None:
        sums = hyper_map(square_sums, grads)
    else:
        sums = hyper_map(F.partial(square_sums, sq_sum_op), grads)
    norm = _sqrt(_addn(sums))          # [1]: the AllReduce goes before Sqrt
    return _reshape(norm, ())


class AnyRankFlag(nn.Cell):
    """True on every rank when it is true on any rank (a sum all-reduce of 0/1, as MindSpore's
    loss-scale cell reduces its overflow status); the identity in stand-alone mode."""

    def __init__(self):
        super().__init__()
        mode = ms.get_auto_parallel_context("parallel_mode")
        self.distributed = mode != ParallelMode.STAND_ALONE
        if self.distributed:
            self.allreduce = P.AllReduce()
        self.cast = P.Cast()
        self.greater = P.Greater()
        self.reshape = P.Reshape()

    def construct(self, flag):
        if not self.distributed:
            return flag
        count = self.allreduce(self.reshape(self.cast(flag, ms.float32), (1,)))    # [1], ranks with flag set
        return self.reshape(self.greater(count, 0.0), ())
