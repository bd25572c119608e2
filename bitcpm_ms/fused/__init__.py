"""Fused CPU training ops for MindFormers' LLaMA (cross-entropy, RoPE + GQA attention, RMSNorm,
SwiGLU): C++ kernels in ops/fused_train/, numpy references (`reference`), the ctypes route
(`library`), MindSpore AOT ops with bprop (`ops`), drop-in cells (`cells`) and one entry point,
`apply_cpu_fusions(net, cfg)`. See docs/cpu_training.md.

`reference` and `library` need only numpy; the names below import MindSpore / MindFormers on
first use.
"""
from .config import FusionConfig
from .errors import FusedOpError

__all__ = ["FusionConfig", "apply_cpu_fusions", "cpu_fusions_available", "FusedOpError"]


def __getattr__(name):
    if name in ("apply_cpu_fusions", "cpu_fusions_available"):
        from . import convert
        return getattr(convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
