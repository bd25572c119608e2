"""`CachedLM`: the prefill and decode-step graphs of a model in this process, behind the small
interface the generation loop uses (`prefill`, `step`, `shapes`, `context`). The MindIR-loaded
graphs (export.py) offer the same interface, so one loop serves both.
"""
import time

import numpy as np
import mindspore as ms

from .cache import KV_DTYPES, KVCache, cache_length, prompt_bucket
from .decoder import (DecodeMultiStepGraph, DecodeStepGraph, PrefillGraph, PrefillModelGraph, decoder_shape,
                      half_head_weight)
from .fused_model import model_unfusable_reason
from .sampling import GenerationError


class CachedLM:
    """KV-cache decoding of `lm` (a BitCPMForCausalLM, fake-quant or converted to packed kernels).

    context: the longest prompt + generation allowed (default: the model's seq_length, the
    context it was trained on, which is also what `greedy_generate` allows).
    fused_layers / fused_attention: the decode step's forms (see DecodeStepGraph): each packed layer as
    one C++ op, or only attention as one; by default the fastest the model allows on CPU.
    decode_steps: greedy tokens per graph call (DecodeMultiStepGraph). Default: DEFAULT_DECODE_STEPS
    when the step runs fused layers (packed models on CPU), else 1; > 1 on another model is refused.
    Sampling and the repetition penalty always decode one token per call.
    head_dtype: "float32" (the model's head, logits equal the model's) or "float16" (a half-precision
    copy of the head weight for the CPU head kernel: half the bytes per token, logits within the
    weight rounding; the precision of llama.cpp's F16 output).
    kv_dtype: "float32" (decoding equals a full recompute up to float reassociation) or "float16"
    (llama.cpp's default cache type: half the cache memory and half the bytes a decode step reads from
    it; each key and value is rounded to float16 once, when stored). float16 needs the C++ decode ops
    (fused_layers or fused_attention, the CPU defaults): the MindSpore-ops step reads float32 caches.
    fused_prefill: the prompt pass (prefill_into) as one PrefillModel op that writes the cache itself and
    runs only the valid tokens (PrefillModelGraph). Default: when the step runs fused layers and the whole
    model qualifies (a packed model on CPU); else the PrefillGraph plus a host write of its K/V."""

    # 16: a graph call costs ~0.5 ms (tiny) to ~2 ms (~100M) in MindSpore's runtime whatever its work,
    # 6-15% of a token at 8 steps and half that at 16 (docs/generation.md, Speed); the cost of 16 is at
    # most 15 tokens decoded past a stop, which the host drops
    DEFAULT_DECODE_STEPS = 16

    def __init__(self, lm, context: int = None, fused_attention: bool = None, fused_layers: bool = None,
                 decode_steps: int = None, head_dtype: str = "float32", kv_dtype: str = "float32",
                 fused_prefill: bool = None):
        lm.set_train(False)
        self.info = decoder_shape(lm)
        trained = int(getattr(lm.config, "seq_length", self.info.max_positions))
        self.context = int(context or trained)
        if not 1 < self.context <= self.info.max_positions:
            raise GenerationError(f"context {self.context} must be in 2..{self.info.max_positions} "
                                  "(the model's RoPE table)")
        if head_dtype not in ("float32", "float16"):
            raise GenerationError(f"head_dtype must be float32 or float16, got {head_dtype!r}")
        self.head_dtype = head_dtype
        if kv_dtype not in KV_DTYPES:
            raise GenerationError(f"kv_dtype must be float32 or float16, got {kv_dtype!r}")
        self.kv_dtype = kv_dtype
        head = None
        if head_dtype == "float16":
            try:
                head = half_head_weight(lm)
            except ValueError as err:
                raise GenerationError(f"head_dtype float16: {err}") from None
        self.prefill_graph = PrefillGraph(lm, head_weight=head)
        self.step_graph = DecodeStepGraph(lm, fused_attention, fused_layers, head_weight=head)
        if kv_dtype == "float16" and not (self.step_graph.fused_layers or self.step_graph.fused_attention):
            raise GenerationError("kv_dtype float16 needs the C++ decode ops (fused_layers or fused_attention, on "
                                  "CPU); the MindSpore-ops decode step reads float32 caches")
        if fused_prefill is None:
            fused_prefill = self.step_graph.fused_layers and model_unfusable_reason(lm) is None
        self.prefill_model_graph = None
        if fused_prefill:
            try:
                self.prefill_model_graph = PrefillModelGraph(lm, head_weight=head)
            except ValueError as err:
                raise GenerationError(f"fused_prefill: {err}") from None
        if decode_steps is None:
            decode_steps = self.DEFAULT_DECODE_STEPS if self.step_graph.fused_layers else 1
        if not isinstance(decode_steps, (int, np.integer)) or decode_steps < 1:
            raise GenerationError(f"decode_steps must be an integer >= 1, got {decode_steps!r}")
        self.decode_steps = int(decode_steps)
        self.multi_step_graph = None
        if self.decode_steps > 1:
            try:
                self.multi_step_graph = DecodeMultiStepGraph(lm, self.decode_steps, head_weight=head)
            except ValueError as err:
                raise GenerationError(f"decode_steps={decode_steps}: {err}") from None
        for g in (self.prefill_graph, self.step_graph, self.multi_step_graph, self.prefill_model_graph):
            if g is not None:
                g.set_train(False)
        self.compiled = set()
        self.compile_seconds = 0.0

    def shapes(self, batch: int, longest: int, needed: int):
        """(prompt bucket, cache length) for a batch whose longest prompt has `longest` tokens and
        which needs `needed` cache slots."""
        return prompt_bucket(longest, self.context), cache_length(needed, self.context)

    def new_cache(self, batch: int, length: int) -> KVCache:
        i = self.info
        return KVCache(i.num_layers, batch, i.kv_heads, length, i.head_dim, self.kv_dtype)

    def warm_up(self, batch: int, prompt_len: int, cache: KVCache):
        """Compile both graphs for these shapes once (a dummy call each), timed apart from decoding."""
        key = (batch, prompt_len, cache.length)
        if key in self.compiled:
            return
        t = time.perf_counter()
        scratch = self.new_cache(batch, cache.length)    # the prompt pass and multi-step calls write a cache
        self.prefill_into(np.zeros((batch, prompt_len), np.int32), np.ones(batch, np.int32), scratch)
        self.step(np.zeros((batch, 1), np.int32), np.zeros(batch, np.int32), cache)
        if self.multi_step_graph is not None:
            self.multi_step(np.zeros((batch, 1), np.int32), np.zeros(batch, np.int32), scratch)
        self.compile_seconds += time.perf_counter() - t
        self.compiled.add(key)

    def prefill(self, input_ids: np.ndarray, valid_length: np.ndarray):
        out = self.prefill_graph(ms.Tensor(input_ids), ms.Tensor(valid_length))
        return tuple(o.asnumpy() for o in out)

    def prefill_into(self, input_ids: np.ndarray, valid_length: np.ndarray, cache: KVCache) -> np.ndarray:
        """The prompt pass: logits [B, V] at each row's last prompt token, and the prompt's keys and values
        in slots 0..valid_length[b]-1 of `cache` (one PrefillModel op when fused_prefill, else the
        PrefillGraph and a host write)."""
        if self.prefill_model_graph is not None:
            return self.prefill_model_graph(ms.Tensor(input_ids), ms.Tensor(valid_length), *cache.tensors).asnumpy()
        logits, keys, values = self.prefill(input_ids, valid_length)
        cache.write_prompt(keys, values)
        return logits

    def step(self, input_ids: np.ndarray, positions: np.ndarray, cache: KVCache):
        out = self.step_graph(ms.Tensor(input_ids), ms.Tensor(positions), *cache.tensors)
        return tuple(o.asnumpy() for o in out)

    def multi_step(self, input_ids: np.ndarray, positions: np.ndarray, cache: KVCache) -> np.ndarray:
        """decode_steps greedy tokens [B, K] from input_ids [B, 1] at positions [B]; the graph stores every
        step's keys and values into `cache` itself."""
        if self.multi_step_graph is None:
            raise GenerationError("this decoder makes one token per call (decode_steps=1)")
        return self.multi_step_graph(ms.Tensor(input_ids), ms.Tensor(positions), *cache.tensors).asnumpy()
