"""bitcpm-ms: ternary (1.58-bit) quantization-aware training of MiniCPM-style LLMs on MindSpore.

Subpackages:
  quant    -- quantization primitives (numpy reference + MindSpore ops), STE Cells, TernaryLinear, quantize_model
  models   -- BitCPM (MiniCPM architecture) config and causal LM on MindFormers' LLaMA
  training -- CPU/Ascend-safe train-step wrapper, metrics callback, FLOP accounting
  data     -- corpus readers, SentencePiece tokenizer, MindRecord packing
  kernels  -- packed 2-bit ternary matmul (AOT custom op) and its numpy reference
  harness  -- the lm-evaluation-harness model `bitcpm` and task files (docs/eval.md)
"""
from importlib.util import find_spec

__version__ = "0.1.0"


LM_EVAL_MODEL = "bitcpm"


def register_lm_eval_model() -> bool:
    """Register the lm-eval model `bitcpm` lazily (a module path: MindSpore is imported only when lm-eval
    builds the model), so that `lm_eval.simple_evaluate(model="bitcpm")` works once bitcpm_ms is
    imported. False when lm-eval is not installed. Called on import (27 ms with lm-eval present)."""
    if find_spec("lm_eval") is None:
        return False
    from lm_eval.api.registry import model_registry
    # lm-eval fills its own lazy entries only into an empty registry: fill them first, so that `hf`,
    # `dummy`, ... stay available next to ours
    import lm_eval.models  # noqa: F401
    if LM_EVAL_MODEL not in model_registry:
        model_registry.register(LM_EVAL_MODEL, target="bitcpm_ms.harness.lm:BitCPMLM")
    return True


register_lm_eval_model()
