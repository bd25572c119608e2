"""MindIR export of the decoding graphs, and generation from the reloaded graphs.

    export_decode_graphs(CachedLM(model), "out/decode", batch_size=1, prompt_length=64, cache_length=256)
    lm = load_decode_graphs("out/decode")        # nn.GraphCell(mindspore.load(...)) for both graphs
    generate(lm, [ids], max_new_tokens=32)       # same loop, same tokens as the in-process model

The directory holds `prefill.mindir` (input_ids [B, P], valid_length [B] -> logits, keys, values),
`decode_step.mindir` (input_ids [B, 1], positions [B], k_0, v_0, ..., k_{L-1}, v_{L-1} [B, kvh, S, d]
of the CachedLM's kv_dtype -> logits, new keys, new values) and `decode_graphs.json` (shapes, model
geometry and the cache dtype). MindIR graphs
have fixed shapes: a smaller batch is padded with dummy rows; a longer prompt or generation than
exported is refused. A packed model's MindIR calls the kernel library by absolute path (as
`model.mindir` of run/export_bitcpm.py): load it where it was built.
"""
import json
import os
import time
from types import SimpleNamespace

import numpy as np
import mindspore as ms
from mindspore import nn

from ..fileio import atomic_dir, atomic_json
from .cache import KVCache
from .sampling import GenerationError

META = "decode_graphs.json"
FORMAT_VERSION = 1


def export_decode_graphs(lm, output_dir: str, batch_size: int, prompt_length: int, cache_length: int) -> dict:
    """Write both graphs of `lm` (a CachedLM) for fixed shapes; returns the metadata written."""
    if not 1 <= prompt_length <= cache_length <= lm.context:
        raise GenerationError(f"need 1 <= prompt_length ({prompt_length}) <= cache_length ({cache_length}) "
                              f"<= context ({lm.context})")
    if batch_size < 1:
        raise GenerationError(f"batch_size must be >= 1, got {batch_size}")
    i = lm.info
    ids = ms.Tensor(np.zeros((batch_size, prompt_length), np.int32))
    valid = ms.Tensor(np.ones(batch_size, np.int32))
    cache = lm.new_cache(batch_size, cache_length)
    step_ids = ms.Tensor(np.zeros((batch_size, 1), np.int32))
    step_pos = ms.Tensor(np.zeros(batch_size, np.int32))
    meta = {"format_version": FORMAT_VERSION, "batch_size": batch_size, "prompt_length": prompt_length,
            "cache_length": cache_length, "context": lm.context, "num_layers": i.num_layers,
            "kv_heads": i.kv_heads, "head_dim": i.head_dim, "vocab_size": i.vocab_size,
            "max_positions": i.max_positions, "kv_dtype": getattr(lm, "kv_dtype", "float32")}
    with atomic_dir(output_dir, error=GenerationError) as tmp:
        ms.export(lm.prefill_graph, ids, valid, file_name=os.path.join(tmp, "prefill"), file_format="MINDIR")
        ms.export(lm.step_graph, step_ids, step_pos, *cache.tensors, file_name=os.path.join(tmp, "decode_step"),
                  file_format="MINDIR")
        atomic_json(meta, os.path.join(tmp, META), indent=1)
    return meta


class ExportedLM:
    """The reloaded graphs behind the interface of CachedLM (prefill, step, shapes, new_cache)."""

    def __init__(self, directory: str):
        path = os.path.join(directory, META)
        if not os.path.isfile(path):
            raise GenerationError(f"{directory} holds no exported decoding graphs ({META} missing)")
        with open(path, encoding="utf-8") as f:
            self.meta = meta = json.load(f)
        if meta.get("format_version") != FORMAT_VERSION:
            raise GenerationError(f"{path}: format_version {meta.get('format_version')}, expected {FORMAT_VERSION}")
        self.info = SimpleNamespace(**{k: meta[k] for k in ("num_layers", "kv_heads", "head_dim", "vocab_size",
                                                            "max_positions")})
        self.batch_size, self.prompt_length = meta["batch_size"], meta["prompt_length"]
        self.cache_length = meta["cache_length"]
        self.kv_dtype = meta.get("kv_dtype", "float32")     # absent in directories written before float16 caches
        self.context = meta["context"]
        self.prefill_graph = nn.GraphCell(ms.load(os.path.join(directory, "prefill.mindir")))
        self.step_graph = nn.GraphCell(ms.load(os.path.join(directory, "decode_step.mindir")))
        self.compile_seconds = 0.0
        self._warm = False

    def shapes(self, batch: int, longest: int, needed: int):
        if batch > self.batch_size:
            raise GenerationError(f"{batch} prompts in one batch; the graphs were exported for {self.batch_size}")
        if longest > self.prompt_length:
            raise GenerationError(f"a prompt has {longest} tokens; the graphs were exported for prompts of at most "
                                  f"{self.prompt_length}")
        if needed > self.cache_length:
            raise GenerationError(f"prompt + max_new_tokens needs {needed + 1} positions; the graphs were exported "
                                  f"with a cache of {self.cache_length} (at most {self.cache_length + 1})")
        return self.prompt_length, self.cache_length

    def new_cache(self, batch: int, length: int) -> KVCache:
        i = self.info
        return KVCache(i.num_layers, self.batch_size, i.kv_heads, length, i.head_dim, self.kv_dtype)

    def warm_up(self, batch: int, prompt_len: int, cache: KVCache):
        if not self._warm:
            t = time.perf_counter()
            self.prefill(np.zeros((1, prompt_len), np.int32), np.ones(1, np.int32))
            self.step(np.zeros((1, 1), np.int32), np.zeros(1, np.int32), cache)
            self.compile_seconds += time.perf_counter() - t
            self._warm = True

    def _pad_rows(self, a: np.ndarray, fill) -> np.ndarray:
        if a.shape[0] == self.batch_size:
            return a
        pad = np.full((self.batch_size - a.shape[0],) + a.shape[1:], fill, a.dtype)
        return np.concatenate([a, pad])

    def prefill(self, input_ids: np.ndarray, valid_length: np.ndarray):
        b = input_ids.shape[0]
        out = self.prefill_graph(ms.Tensor(self._pad_rows(input_ids, 0)), ms.Tensor(self._pad_rows(valid_length, 1)))
        logits, keys, values = (o.asnumpy() for o in out)
        return logits[:b], keys[:, :b], values[:, :b]

    def prefill_into(self, input_ids: np.ndarray, valid_length: np.ndarray, cache: KVCache) -> np.ndarray:
        """As CachedLM.prefill_into: the exported prefill graph, then a host write of its K/V."""
        logits, keys, values = self.prefill(input_ids, valid_length)
        cache.write_prompt(keys, values)
        return logits

    def step(self, input_ids: np.ndarray, positions: np.ndarray, cache: KVCache):
        b = input_ids.shape[0]
        out = self.step_graph(ms.Tensor(self._pad_rows(input_ids, 0)), ms.Tensor(self._pad_rows(positions, 0)),
                              *cache.tensors)
        logits, keys, values = (o.asnumpy() for o in out)
        return logits[:b], keys[:, :b], values[:, :b]


def load_decode_graphs(directory: str) -> ExportedLM:
    return ExportedLM(directory)
