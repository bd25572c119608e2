"""Where a batch-1 decode step of benchmarks/generation_speed.py goes: MindSpore Profiler op times
grouped into parts of the step (layer ops, attention, head, the rest), the graph launch cost (wall -
op time), and the same layer kernels called straight through ctypes (their cost without MindSpore)."""
import collections
import csv
import glob
import os
import re
import shutil
import tempfile
import time

import numpy as np


def _op_rows(out_dir):
    f = glob.glob(os.path.join(out_dir, "**", "cpu_op_detail_info_0.csv"), recursive=True)[0]
    return list(csv.DictReader(open(f, encoding="utf-8")))


LINEAR_SCOPES = ("/wq-", "/wk-", "/wv-", "/wo-", "/w1-", "/w2-", "/w3-")


def _category(row) -> str:
    """Op -> part of the step, from its scope (Default/layers-CellList/0-LLamaDecodeLayer/attention-...)."""
    name, kind = row["full_op_name"], row["op_type"]
    if "weight_quantizer" in name:
        return "fake_quant_weight_quantizer"
    if "layer_kernels" in name or re.fullmatch(r"Default/Custom-op\d+", name):
        # a whole layer as one DecodeLayer op (norms, 7 ternary projections, attention, SwiGLU); the
        # profiler names ops called through the CellList of layer ops without its scope
        return "decode_layer_aot"
    if "attention_kernel" in name:
        return "attention_kernel_aot"
    if "head_kernel" in name:
        return "head_kernel_aot"
    if kind == "Custom":
        return "ternary_kernel_aot"
    if any(s in name for s in LINEAR_SCOPES):
        return "linear_other_ops"           # fake-quant MatMul + activation quantizer, reshapes, casts
    if "/layers" in name:
        return "norms_ffn_residual"
    if kind == "MatMul" or "lm_head" in name or "norm_out" in name:
        return "head_final_norm"
    return "attention_rope_embedding"       # the decoder graph's own ops


def breakdown(lm, net, prompt_len, steps=20) -> dict:
    """Where a batch-1 decode step goes (see module doc)."""
    import mindspore as ms
    from mindspore import Profiler, nn
    from bitcpm_ms.kernels import PackedTernaryLinear
    cache = lm.new_cache(1, lm.shapes(1, prompt_len, prompt_len + steps)[1])
    ids, pos = np.array([[5]], np.int32), np.array([prompt_len], np.int32)
    lm.step(ids, pos, cache)
    t = time.perf_counter()
    for _ in range(steps):
        lm.step(ids, pos, cache)
    wall_ms = 1e3 * (time.perf_counter() - t) / steps

    class Tiny(nn.Cell):
        def construct(self, x):
            return x + 1.0
    x, tiny = ms.Tensor(np.zeros((1, 4), np.float32)), Tiny()
    tiny(x).asnumpy()
    t = time.perf_counter()
    for _ in range(200):
        tiny(x).asnumpy()
    launch_ms = 1e3 * (time.perf_counter() - t) / 200

    out_dir = tempfile.mkdtemp(prefix="gen_prof_")
    prof = Profiler(output_path=out_dir)
    for _ in range(steps):
        lm.step(ids, pos, cache)
    prof.analyse()
    ms_per = collections.Counter()
    calls = collections.Counter()
    for r in _op_rows(out_dir):
        ms_per[_category(r)] += float(r["op_total_time(ms)"]) / steps
        calls[_category(r)] += int(r["op_occurrences"]) / steps
    shutil.rmtree(out_dir, ignore_errors=True)
    result = {"wall_ms_per_step": wall_ms, "one_op_graph_call_ms": launch_ms,
              "op_ms_per_step": dict(ms_per), "op_calls_per_step": dict(calls),
              "framework_ms_per_step": wall_ms - sum(ms_per.values())}
    layers = [c for _, c in net.cells_and_names() if isinstance(c, PackedTernaryLinear)]
    if calls["decode_layer_aot"]:
        result["raw_layer_ms_per_step"] = raw_layer_ms(net, prompt_len)
        result["aot_overhead_us_per_call"] = 1e3 * (ms_per["decode_layer_aot"] - result["raw_layer_ms_per_step"]) / \
            calls["decode_layer_aot"]
    elif layers:
        result["raw_kernel_ms_per_step"] = raw_kernel_ms(layers)
        n = calls["ternary_kernel_aot"] or 1
        result["aot_overhead_us_per_call"] = 1e3 * (ms_per["ternary_kernel_aot"] - result["raw_kernel_ms_per_step"]) / n
    return result


def raw_layer_ms(net, position, reps=50) -> float:
    """The step's DecodeLayer kernels (batch 1, one token at `position`) called through ctypes with
    their arguments built once: the layers' own cost, without MindSpore or Python marshalling."""
    from bitcpm_ms.inference.fused_layer import _projections
    from bitcpm_ms.kernels.decode_layer import layer_spec, prepared_decode_layer
    attn = net.model.layers[0].attention
    d, kvh, heads = int(attn.head_dim), int(attn.n_kv_head), int(attn.n_head)
    rng = np.random.default_rng(0)
    calls = []
    for layer in net.model.layers:
        projs = [p.to_packed() for p in _projections(layer)]
        norms = (layer.attention_norm.weight.asnumpy(), layer.ffn_norm.weight.asnumpy())
        cache = rng.standard_normal((1, kvh, position + 1, d)).astype(np.float32)
        spec = layer_spec(layer.attention_norm.eps, layer.ffn_norm.eps, float(getattr(layer.add, "scale", 1.0)),
                          1 / np.sqrt(d), heads, layer.attention.wq.act_bits, layer.attention.wq.eps)
        calls.append(prepared_decode_layer(
            rng.standard_normal((1, heads * d)).astype(np.float32), norms, projs, cache, cache,
            np.array([position], np.int32), np.ones((1, d), np.float32), np.zeros((1, d), np.float32), spec)[0])

    def run():
        for call in calls:
            if call():
                raise RuntimeError("DecodeLayer failed")
    run()
    t = time.perf_counter()
    for _ in range(reps):
        run()
    return 1e3 * (time.perf_counter() - t) / reps


def raw_kernel_ms(layers, reps=50) -> float:
    """The step's ternary matmuls (batch 1) called straight through the C ABI, no Python checks:
    what the AOT op would cost with zero overhead."""
    from bitcpm_ms.kernels.library import _load
    lib = _load()
    calls = []
    for c in layers:
        p = c.to_packed()
        x = np.random.default_rng(0).standard_normal((1, p.in_features)).astype(np.float32)
        y = np.empty((1, p.out_features), np.float32)
        calls.append((x, p.packed, p.scales, y, p.in_features, p.out_features, p.scales.shape[1],
                      8 if c.act_bits == 8 else 0, c.eps))
    def run():
        for x, w, sc, y, k, n, g, a8, eps in calls:
            lib.bitcpm_ternary_matmul(x.ctypes.data, w.ctypes.data, sc.ctypes.data, y.ctypes.data, 1, k, n, g, a8,
                                      float(eps), 0, 0)
    run()
    t = time.perf_counter()
    for _ in range(reps):
        run()
    return 1e3 * (time.perf_counter() - t) / reps
