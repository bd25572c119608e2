"""`apply_cpu_fusions(net, cfg)`: the one entry point that swaps MindFormers' LLaMA modules for the
fused CPU training ops (torchtitan-style converter, applied outside the model files).

Only on CPU, single process or data parallel: on Ascend, or in (semi-)auto parallel, nothing is
changed and MindFormers' own (fused) operators stay. Each module is checked against what the
fused op reproduces; one that does not qualify (flash attention, KV cache, fused QKV, context
parallel, non-float32 compute, per-token loss, ...) is left as it is, so it keeps running the
MindSpore op chain, and the reason is logged.
"""
import logging
from typing import Callable, List, Optional, Tuple

import mindspore as ms
from mindspore import nn
from mindspore.ops import operations as P
from mindformers.core.loss.loss import CrossEntropyLoss
from mindformers.models.llama.llama_layer import LlamaFeedForward, LlamaRMSNorm, LlamaSiLU
from mindformers.models.llama.llama_transformer import LLamaAttention
from mindformers.modules.layers import Linear

from ..quant.swap import replace_cells, swap_child
from . import library
from .cells import FusedCrossEntropyLoss, FusedLlamaAttention, FusedLlamaFeedForward, FusedLlamaRMSNorm
from .config import FusionConfig
from .ops import BlasLinearMatMul, cpu_fusions_available

logger = logging.getLogger(__name__)
_F32 = ms.float32


def _attention_problem(cell) -> Optional[str]:
    checks = [
        (getattr(cell, "use_past", False), "use_past (KV cache)"),
        (getattr(cell, "use_flash_attention", False), "use_flash_attention"),
        (getattr(cell, "qkv_concat", False), "qkv_concat"),
        (getattr(cell, "context_parallel", 1) != 1, "context_parallel > 1"),
        (getattr(cell, "seq_pipe", False), "seq_split_num > 1"),
        (getattr(cell, "rmsnorm_compute_2d", False), "rmsnorm_compute_2d"),
        (getattr(cell, "use_ring_attention", False), "use_ring_attention"),
        (getattr(cell, "use_eod_attn_mask_compression", False), "use_eod_attn_mask_compression"),
        (not getattr(getattr(cell, "apply_rotary_emb", None), "use_rope_slice", False), "use_rope_slice=False"),
        (getattr(cell, "dtype", None) != _F32 or getattr(cell, "softmax_dtype", None) != _F32,
         "compute or softmax dtype is not float32"),
        (cell.head_dim % 2 != 0, f"odd head_dim {cell.head_dim}"),
    ]
    return next((why for bad, why in checks if bad), None)


def _rms_norm_problem(cell) -> Optional[str]:
    if not getattr(cell, "self_define", False):
        return "uses the RmsNorm kernel (fused_rms_norm)"
    return None if cell.compute_type == _F32 else "compute_type is not float32"


def _ffn_problem(cell) -> Optional[str]:
    if getattr(cell, "ffn_concat", False) or getattr(cell, "use_fused_swiglu", False):
        return "ffn_concat / use_fused_swiglu"
    w1 = getattr(cell, "w1", None)
    if w1 is None or not isinstance(getattr(w1, "activation", None), LlamaSiLU) or not w1.activation_flag:
        return "gate activation is not SiLU"
    return None


def _loss_problem(cell) -> Optional[str]:
    if getattr(cell, "calculate_per_token_loss", False) or getattr(cell, "seq_pipe", False):
        return "per-token loss or sequence pipeline (returns numerator and denominator)"
    if getattr(cell, "need_monitor", False) or getattr(cell, "enable_force_redistribute", False):
        return "local-loss monitoring or parallel redistribution"
    return None


def _linear_problem(cell) -> Optional[str]:
    mm = getattr(cell, "matmul", None)
    if getattr(cell, "expert_flag", False) or getattr(cell, "use_gmm", False):
        return "expert (batched) Linear"
    if type(mm) is not P.MatMul or mm.attrs.get("transpose_a") or not mm.attrs.get("transpose_b"):
        return "matmul is not MatMul(transpose_b=True)"
    if mm.attrs.get("in_strategy"):
        return "matmul carries a shard strategy"
    if cell.dtype != _F32 or cell.weight.dtype != _F32:
        return "compute dtype or weight is not float32"
    return None


def _swap_linear_matmuls(net: nn.Cell) -> List[str]:
    """Give every qualifying Linear (TernaryLinear included) the OpenBLAS-backed matmul, in place:
    the layer, its parameters and its quantizers stay; only its `matmul` primitive changes."""
    problem = library.blas_problem()
    if problem:
        logger.info("cpu fusions: matmul keeps MindSpore's MatMul: %s", problem)
        return []
    swapped = []
    for name, cell in list(net.cells_and_names()):
        if isinstance(cell, Linear):
            why = _linear_problem(cell)
            if why:
                logger.info("cpu fusions: %s keeps MindSpore's MatMul: %s", name, why)
                continue
            swap_child(cell, "matmul", BlasLinearMatMul())     # keeps the MatMul's recompute settings
            swapped.append(f"{name}.matmul")
    return swapped


# (config field, module class, qualification check, replacement)
_RULES: List[Tuple[str, type, Callable, Callable]] = [
    ("attention", LLamaAttention, _attention_problem, FusedLlamaAttention),
    ("rms_norm", LlamaRMSNorm, _rms_norm_problem, FusedLlamaRMSNorm),
    ("swiglu", LlamaFeedForward, _ffn_problem, FusedLlamaFeedForward),
    ("cross_entropy", CrossEntropyLoss, _loss_problem, FusedCrossEntropyLoss),
]


def apply_cpu_fusions(net: nn.Cell, cfg=True) -> List[str]:
    """Swap the qualifying modules of `net` for fused-op cells, in place; returns the names swapped.

    cfg: a FusionConfig or its YAML value (True, False, list of names, mapping). Parameters keep
    their names and values. Returns [] (and changes nothing) off CPU or in (semi-)auto parallel.
    """
    cfg = FusionConfig.from_value(cfg)
    if not cfg.enabled():
        return []
    why_not = cpu_fusions_available()
    if why_not:
        logger.info("cpu fusions skipped: %s", why_not)
        return []
    swapped = []
    for field, cls, problem, replacement in _RULES:
        if not getattr(cfg, field):
            continue

        def wanted(name, cell, cls=cls, problem=problem):
            if not isinstance(cell, cls):
                return False
            why = problem(cell)
            if why:
                logger.info("cpu fusions: %s keeps the MindSpore op chain: %s", name, why)
            return why is None

        swapped += replace_cells(net, wanted, lambda name, cell, r=replacement: r(cell))
    if cfg.matmul:
        swapped += _swap_linear_matmuls(net)
    logger.info("cpu fusions: %d modules fused (%s)", len(swapped), ", ".join(cfg.enabled()))
    return swapped
