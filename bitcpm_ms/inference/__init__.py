"""Text generation with a KV cache on CPU: prefill + decode-step graphs over a trained BitCPM model
(fake-quant or packed ternary kernels), numpy sampling, streaming, MindIR export of the graphs.

    from bitcpm_ms.inference import CachedLM, generate
    lm = CachedLM(model)                      # model: BitCPMForCausalLM, optionally convert_model(model)
    out = generate(lm, [prompt_ids], max_new_tokens=64, temperature=0.7, top_p=0.7, seed=0)

See docs/generation.md. The layer sits above models/quant/kernels and below app.
"""
from .sampling import (GenerationConfig, GenerationError, apply_repetition_penalty, apply_temperature,
                       filtered_logits, next_token, softmax, top_k_mask, top_p_mask)
from .streaming import IncrementalText, TextStreamer
import importlib

__all__ = ["GenerationConfig", "GenerationError", "apply_repetition_penalty", "apply_temperature",
           "filtered_logits", "next_token", "softmax", "top_k_mask", "top_p_mask", "IncrementalText",
           "TextStreamer", "CachedLM", "generate", "generate_batches", "GenerationOutput", "GenerationStats",
           "export_decode_graphs", "load_decode_graphs"]

_LAZY = {"CachedLM": "runtime", "generate": "generation", "generate_batches": "generation",
         "GenerationOutput": "generation", "GenerationStats": "generation",
         "export_decode_graphs": "export", "load_decode_graphs": "export"}


def __getattr__(name):  # lazy: the numpy parts (sampling, streaming) do not import MindSpore
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
