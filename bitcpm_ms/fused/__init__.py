"""Fused CPU training ops for MindFormers' LLaMA (cross-entropy, RoPE + GQA attention, RMSNorm,
SwiGLU): C++ kernels in ops/fused_train/, numpy references, MindSpore AOT ops with bprop, drop-in
cells, and one entry point, `apply_cpu_fusions(net, cfg)`. See docs/performance.md."""
from .config import FusionConfig
from .convert import apply_cpu_fusions, cpu_fusions_available
from .errors import FusedOpError

__all__ = ["FusionConfig", "apply_cpu_fusions", "cpu_fusions_available", "FusedOpError"]
