"""CpuFusedAdamW: MindFormers' AdamW with the per-parameter update in one C++ pass on CPU.

Same hyper-parameters, same state (``adam_m.*`` / ``adam_v.*``, ``global_step``), same formula in
the same order of operations (MindFormers' ``_update_run_op``); only the ~12 element-wise ops per
parameter become one kernel (`FusedAdamW` in ops/fused_train/c_abi.cpp) whose three outputs are
assigned to the parameter and its moments. Off CPU, in (semi-)auto parallel, for non-float32
parameters or with `swap`, it is exactly MindFormers' AdamW. YAML: ``optimizer.type: CpuFusedAdamW``.
(MindFormers' own `FusedAdamW` / `AdamW(use_fused=True)` calls an Ascend-only kernel.)

The optimizer also takes the global-norm clip factor (``optimizer(grads, grad_scale)``, what
`BitCPMTrainOneStepCell` passes when ``takes_grad_scale``): the kernel multiplies each gradient by
it as it reads it, in float32 exactly like the separate scaling pass it replaces, so clipping costs
no extra pass over the gradients (one read and one write of every gradient saved per step).
"""
import numpy as np
import mindspore as ms
from mindspore import Tensor, ops
from mindspore.ops import composite as C
from mindspore.ops import functional as F
from mindformers.core.optim.adamw import AdamW as BasicAdamW
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from . import library
from .ops import cpu_fusions_available

_fused_adamw = C.MultitypeFuncGraph("fused_adamw")


_scale = C.MultitypeFuncGraph("_scale_grad")


@_fused_adamw.register("Function", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor", "Tensor",
                       "Tensor", "Bool")
def _fused_adamw_step(op, hyper, grad_scale, step, lr, weight_decay, param, grad, exp_avg, exp_avg_sq, optim_filter):
    if optim_filter:
        new_p, new_m, new_v = op(param, grad, exp_avg, exp_avg_sq, lr, weight_decay, step, hyper, grad_scale)
        new_p = F.depend(new_p, F.assign(exp_avg, new_m))
        new_p = F.depend(new_p, F.assign(exp_avg_sq, new_v))
        F.assign(param, new_p)
        return new_p
    return grad


@_scale.register("Tensor", "Tensor")
def _scale_tensor(factor, grad):
    return grad * ops.cast(factor, grad.dtype)


def _adamw_op():
    library.load()
    return ops.Custom(f"{library.path()}:FusedAdamW", out_shape=lambda p, g, m, v, lr, wd, st, h, gs: (p, p, p),
                      out_dtype=lambda *a: (ms.float32,) * 3, func_type="aot")


@MindFormerRegister.register(MindFormerModuleType.OPTIMIZER)
class CpuFusedAdamW(BasicAdamW):
    """MindFormers' AdamW (decoupled weight decay, bias correction); on CPU the update of each
    parameter is one fused kernel. Arguments as AdamW."""

    takes_grad_scale = True        # construct(gradients, grad_scale): BitCPMTrainOneStepCell folds clipping in

    def __init__(self, params, learning_rate=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, swap=False):
        super().__init__(params, learning_rate=learning_rate, betas=betas, eps=eps, weight_decay=weight_decay,
                         swap=swap)
        self.fused = (cpu_fusions_available() is None and not swap
                      and all(p.dtype == ms.float32 for p in self._parameters))
        self.scale_map = C.HyperMap()
        if self.fused:
            self.fused_op = _adamw_op()
            self.hyper = Tensor(np.array([betas[0], betas[1], eps], np.float32))
            self.unit_scale = Tensor(np.ones(1, np.float32))

    def construct(self, gradients, grad_scale=None):
        """One update; `grad_scale` (a float32 scalar or [1] tensor, optional) multiplies every gradient
        first: inside the fused kernel, or as MindFormers' AdamW sees it in the fallback."""
        if not self.fused:
            if grad_scale is not None:
                gradients = self.scale_map(F.partial(_scale, grad_scale), gradients)
            return super().construct(gradients)
        scale = self.unit_scale if grad_scale is None else ops.reshape(ops.cast(grad_scale, ms.float32), (1,))
        weight_decay = self.get_weight_decay()
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        step = self.global_step
        if self.is_group:
            if self.is_group_lr:
                return self.hyper_map(F.partial(_fused_adamw, self.fused_op, self.hyper, scale, step),
                                      lr, weight_decay, self._parameters, gradients, self.exp_avg, self.exp_avg_sq,
                                      self.optim_filter)
            return self.hyper_map(F.partial(_fused_adamw, self.fused_op, self.hyper, scale, step, lr),
                                  weight_decay, self._parameters, gradients, self.exp_avg, self.exp_avg_sq,
                                  self.optim_filter)
        return self.hyper_map(F.partial(_fused_adamw, self.fused_op, self.hyper, scale, step, lr, weight_decay),
                              self._parameters, gradients, self.exp_avg, self.exp_avg_sq, self.optim_filter)
