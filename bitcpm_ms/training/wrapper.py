"""A train-step wrapper that runs on CPU and Ascend alike.

MindFormers' `MFTrainOneStepCell` derives from `TrainOneStepWithLossScaleCell`, which on any
target that is neither GPU nor 910B assumes a 910A and calls `NPUGetFloatStatusV2` (no CPU
kernel). This wrapper detects overflow with device-neutral ops instead (the global gradient norm
is finite or it is not), clips by global norm, and skips the optimizer update of a step whose
gradients are not finite, counting such steps in a `skipped_steps` parameter that is saved
with checkpoints. Outputs follow MFTrainOneStepCell's 5-tuple
(loss, overflow, loss_scale, learning_rate, global_norm), so MindFormers' callbacks also work.
The norm and the skip decision are the same on every rank (`global_norm.py`).
"""
from copy import deepcopy

import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.nn.learning_rate_schedule import LearningRateSchedule
from mindspore.ops import composite as C
from mindspore.ops import functional as F
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..fused.ops import sum_squares_op
from .global_norm import AnyRankFlag, global_norm as _global_norm

_scale = C.MultitypeFuncGraph("_scale")


@_scale.register("Tensor", "Tensor")
def _scale_tensor(factor, grad):
    return grad * ops.cast(factor, grad.dtype)


@MindFormerRegister.register(MindFormerModuleType.WRAPPER)
class BitCPMTrainOneStepCell(nn.TrainOneStepCell):
    """One optimizer step with static loss scaling, global-norm clipping and non-finite skipping.

    Args:
        network: the loss network (returns a scalar loss).
        optimizer: a MindSpore optimizer (its learning rate may be a schedule).
        use_clip_grad: clip gradients to `max_grad_norm` by global norm.
        max_grad_norm: the clipping threshold.
        scale_sense: static loss scale (1.0 for fp32/bf16 training); gradients are unscaled
            before clipping and the update.
        fused_norm: on CPU, each gradient's sum of squares for the global norm in one C++ pass
            (bitcpm_ms.fused); False (and any non-CPU target) keeps Square + ReduceSum.
        The clip factor goes to the optimizer as `optimizer(grads, factor)` when the optimizer has
        `takes_grad_scale` (CpuFusedAdamW), else the gradients are scaled here.
        Other MindFormers wrapper arguments (parallel_config, lr_scheduler, ...) are accepted
        and ignored, so the Trainer can pass its usual defaults.
    """

    def __init__(self, network, optimizer, use_clip_grad=True, max_grad_norm=1.0, scale_sense=1.0, fused_norm=True,
                 **kwargs):
        super().__init__(network, optimizer)
        if float(max_grad_norm) <= 0:
            raise ValueError(f"runner_wrapper.max_grad_norm must be positive, got {max_grad_norm}")
        if hasattr(scale_sense, "loss_scale_value"):     # a MindFormers loss-scale cell given in YAML
            scale_sense = scale_sense.loss_scale_value
        self.use_clip_grad = bool(use_clip_grad)
        self.max_grad_norm = float(max_grad_norm)
        self.scale_value = float(scale_sense)
        self.scale_sense = Parameter(Tensor(self.scale_value, ms.float32), name="scale_sense", requires_grad=False)
        self.skipped_steps = Parameter(Tensor(0, ms.int32), name="skipped_steps", requires_grad=False)
        self.learning_rate = deepcopy(self.optimizer.learning_rate)
        self.dynamic_lr = isinstance(self.learning_rate, LearningRateSchedule)
        self.hyper_map = C.HyperMap()
        self.any_rank = AnyRankFlag()      # every rank skips the step when one sees a non-finite norm
        self.sq_sum = sum_squares_op() if fused_norm else None   # None: tagged Square + ReduceSum
        # an optimizer that takes the clip factor (CpuFusedAdamW) applies it inside its update: no
        # separate read and write of every gradient for the scaling
        self.fold_clip = self.use_clip_grad and bool(getattr(optimizer, "takes_grad_scale", False))

    def construct(self, *inputs):
        loss = self.network(*inputs)
        sens = ops.fill(loss.dtype, loss.shape, self.scale_value)
        grads = self.grad(self.network, self.weights)(*inputs, sens)
        grads = self.grad_reducer(grads)
        if self.scale_value != 1.0:
            grads = self.hyper_map(F.partial(_scale, 1.0 / self.scale_sense), grads)
        global_norm = _global_norm(self.hyper_map, grads, self.sq_sum)      # tagged: all-reduced under semi-auto parallel
        overflow = self.any_rank(ops.logical_not(ops.isfinite(global_norm)))
        factor = self.max_grad_norm / ops.maximum(global_norm, self.max_grad_norm)
        if self.use_clip_grad and not self.fold_clip:
            grads = self.hyper_map(F.partial(_scale, factor), grads)
        if self.dynamic_lr:
            lr = self.learning_rate(self.optimizer.global_step)
        else:
            lr = self.learning_rate
        if overflow:
            loss = F.depend(loss, ops.assign_add(self.skipped_steps, Tensor(1, ms.int32)))
        elif self.fold_clip:
            loss = F.depend(loss, self.optimizer(grads, factor))
        else:
            loss = F.depend(loss, self.optimizer(grads))
        return loss, overflow, self.scale_sense, lr, global_norm
