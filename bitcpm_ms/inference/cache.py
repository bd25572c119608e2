"""The host-owned KV cache and the shape buckets of the decoding graphs.

Each layer's cache is a pair of numpy arrays [B, kv_heads, S, head_dim], float32 by default or float16
(`CachedLM(kv_dtype="float16")`, llama.cpp's default cache type: half the memory, and half the bytes a
decode step reads at long positions; the values are rounded once when stored). MindSpore Tensors
made once with `Tensor.from_numpy` share their memory, so the step graph reads the cache in place
(no copy per step) and the new entries are written with numpy; tests check every step's logits
against a full recompute, which would catch a stale view.

Graphs are compiled per input shape. Prompts are right-padded to a bucket (a power of two, at
least 16) and the cache length is rounded up to a multiple of 64, so a session compiles one prefill
graph per (batch, prompt bucket) and one step graph per (batch, cache length).
"""
import numpy as np
import mindspore as ms

PROMPT_BUCKET_MIN = 16
CACHE_ROUND = 64


def prompt_bucket(longest: int, context: int) -> int:
    """Padded prompt length: the next power of two >= longest (>= 16), at most the context."""
    p = PROMPT_BUCKET_MIN
    while p < longest:
        p *= 2
    return min(p, context)


def cache_length(needed: int, context: int) -> int:
    """Cache slots: `needed` rounded up to a multiple of 64, at most the context."""
    return min(-(-needed // CACHE_ROUND) * CACHE_ROUND, context)


KV_DTYPES = ("float32", "float16")


class KVCache:
    """keys[l], values[l]: [B, kv_heads, S, head_dim] of `dtype` (float32 or float16); `tensors` is the
    step graph's input tuple (k_0, v_0, k_1, v_1, ...), views of the same memory. Writes from numpy
    round float32 values to float16 to nearest even, as the decode kernels' own stores do."""

    def __init__(self, num_layers: int, batch: int, kv_heads: int, length: int, head_dim: int,
                 dtype: str = "float32"):
        if dtype not in KV_DTYPES:
            raise ValueError(f"a KV cache is float32 or float16, got {dtype!r}")
        shape = (batch, kv_heads, length, head_dim)
        self.length = length
        self.dtype = dtype
        self.keys = [np.zeros(shape, dtype) for _ in range(num_layers)]
        self.values = [np.zeros(shape, dtype) for _ in range(num_layers)]
        self.tensors = tuple(ms.Tensor.from_numpy(a) for kv in zip(self.keys, self.values) for a in kv)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.keys) * 2)

    def write_prompt(self, keys: np.ndarray, values: np.ndarray):
        """keys/values [L, B, kv_heads, P, head_dim] from the prefill graph -> slots 0..P-1 (the padded
        prompt may be longer than the cache; slots past the longest prompt hold padding anyway)."""
        b, p = keys.shape[1], min(keys.shape[3], self.length)
        for layer, (k, v) in enumerate(zip(keys, values)):
            self.keys[layer][:b, :, :p] = k[:, :, :p]
            self.values[layer][:b, :, :p] = v[:, :, :p]

    def write_step(self, keys: np.ndarray, values: np.ndarray, positions: np.ndarray):
        """keys/values [L, B, kv_heads, 1, head_dim] of the step graph -> slot positions[b] of row b."""
        rows = np.arange(keys.shape[1])
        for layer, (k, v) in enumerate(zip(keys, values)):
            self.keys[layer][rows, :, positions, :] = k[:, :, 0, :]       # [B, kv_heads, head_dim]
            self.values[layer][rows, :, positions, :] = v[:, :, 0, :]
