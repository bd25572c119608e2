#!/usr/bin/env python3
"""Generation speed: KV-cache prefill and decode (bitcpm_ms.inference) vs today's `greedy_generate`
and vs llama.cpp on the same weights.

    python3 -m benchmarks.generation_speed [--shapes tiny,100m] [--threads 1,2] [--batches 1,8]
        [--n_prompt 128] [--n_gen 128] [--rounds 3] [--no_llamacpp] [--json benchmarks/results/generation_speed.json]

Each shape is one set of random latent weights (speed does not depend on training), group size 256
(= a TQ2_0 block, so the llama.cpp export needs no re-quantization), saved as a checkpoint that every
variant loads:
  * fake_quant  the QAT model as trained (TernaryLinear re-quantizes its weight in every call);
  * packed_w    convert_model, weight-only ternary kernel;
  * packed_a8   convert_model of the same weights trained with act_bits=8, W1.58A8 kernel;
  packed_* decode with one `DecodeLayer` op per layer and 8 greedy tokens per graph call (the CPU
  defaults: CachedLM decode_steps), float32 head;
  * packed_a8_f16head  packed_a8 with the float16 head (head_dtype; llama.cpp's F16 output precision);
  * packed_a8_1step    packed_a8 at one token per graph call (what sampling runs; the form before
    multi-step decoding);
  * packed_a8_cells  the same packed W1.58A8 model decoding through the model's own cells (one op per
    projection, fused attention, one token per call): the form before the whole-layer op.
One subprocess per (shape, threads), pinned to that many cores (sched_setaffinity, MindSpore
runtime_num_threads, kernels.set_num_threads). Prompts: n_prompt random ids per row; greedy decoding
of n_gen tokens, no EOS. Prefill tokens/s = prompt tokens / prefill graph time; decode tokens/s =
tokens made by decode steps / step graph time (host sampling excluded, reported apart). Variants are
interleaved round by round; tables show the median of the rounds and the min-max spread.
Baseline (tiny only): `app.predict.greedy_generate`, the full-recompute loop predict mode used
before, at 256 tokens of context. Breakdown (batch 1): MindSpore Profiler op times of the decode step
grouped into ternary kernel (AOT op), attention, head, rest; graph launch = wall - op time; the AOT
op's own overhead = its time per call minus the same matmul through ctypes.
llama.cpp (batch 1): filled when `benchmarks/llamacpp.py` and `bitcpm_ms.app.gguf_export` import
(llama-bench on a TQ2_0 GGUF export of the same checkpoint); otherwise skipped with a message.
"""
import argparse
import collections
import csv
import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks.generation_targets import targets as generation_targets
from benchmarks.machine import machine_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_YAML = os.path.join(ROOT, "yaml_configs", "bitcpm_tiny_cpu.yaml")
GROUP = 256
SHAPES = {
    "tiny": {},     # the tiny YAML's model: hidden 256, 4 layers, 4/2 heads, FFN 768, vocab 8192 (7.3M)
    "100m": {"model.model_config.hidden_size": 768, "model.model_config.num_layers": 12,
             "model.model_config.num_heads": 12, "model.model_config.n_kv_heads": 4,
             "model.model_config.intermediate_size": 2304, "model.model_config.dim_model_base": 256},
}
VARIANTS = ("fake_quant", "packed_w", "packed_a8", "packed_a8_f16head", "packed_a8_1step", "packed_a8_cells")


def config_for(shape, context, act_bits=None):
    from bitcpm_ms.app.config import load_config
    return load_config(TINY_YAML, {**SHAPES[shape], "quant.group_size": GROUP, "quant.act_bits": act_bits,
                                   "model.model_config.batch_size": 1, "model.model_config.seq_length": context})


def prepare_checkpoint(shape, context, work) -> dict:
    import mindspore as ms
    from bitcpm_ms.app.artifacts import build_model
    ms.set_seed(0)
    net = build_model(config_for(shape, context))
    path = os.path.join(work, f"{shape}.ckpt")
    ms.save_checkpoint(net, path)
    return {"checkpoint": path, "params": int(sum(p.size for p in net.get_parameters()))}


# ------------------------------------------------------------------ worker (one shape, one thread count)
def load_variants(shape, ckpt, context):
    from bitcpm_ms.app.artifacts import load_model
    from bitcpm_ms.inference import CachedLM
    from bitcpm_ms.quant.convert import convert_model
    nets = {"fake_quant": load_model(config_for(shape, context), ckpt)[0],
            "packed_w": convert_model(load_model(config_for(shape, context), ckpt)[0]),
            "packed_a8": convert_model(load_model(config_for(shape, context, act_bits=8), ckpt)[0])}
    lms = {k: CachedLM(n) for k, n in nets.items()}
    for name, kw in (("packed_a8_f16head", dict(head_dtype="float16")), ("packed_a8_1step", dict(decode_steps=1)),
                     ("packed_a8_cells", dict(fused_layers=False))):
        nets[name] = nets["packed_a8"]
        lms[name] = CachedLM(nets["packed_a8"], **kw)
    return nets, lms


def time_generation(lm, prompts, n_gen) -> dict:
    from bitcpm_ms.inference import generate
    s = generate(lm, prompts, max_new_tokens=n_gen).stats
    return {"prefill_tok_s": s.prefill_tokens_per_s, "decode_tok_s": s.decode_tokens_per_s,
            "decode_ms_per_call": 1e3 * s.decode_seconds / max(1, s.decode_calls),
            "host_ms_per_step": 1e3 * s.host_seconds / max(1, s.decode_calls), "compile_s": s.compile_seconds}


def time_greedy_generate(net, prompt, context, tokens=6) -> float:
    """Tokens/s of the old full-recompute loop (its per-token cost does not depend on the position)."""
    from bitcpm_ms.app.predict import greedy_generate
    greedy_generate(net, prompt, 1, context)                      # compile
    t = time.perf_counter()
    greedy_generate(net, prompt, tokens, context)
    return tokens / (time.perf_counter() - t)


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


def worker(shape, ckpt, threads, batches, n_prompt, n_gen, rounds) -> dict:
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", runtime_num_threads=threads)
    from bitcpm_ms.kernels import set_num_threads
    set_num_threads(threads)
    context = n_prompt + n_gen
    nets, lms = load_variants(shape, ckpt, context)
    rng = np.random.default_rng(0)
    prompts = {b: rng.integers(4, 8000, (b, n_prompt)).tolist() for b in batches}
    for name in VARIANTS:                                         # compile every shape once
        for b in batches:
            time_generation(lms[name], prompts[b], 2)
    samples = []
    for r in range(rounds):
        for name in VARIANTS:
            for b in batches:
                samples.append({"round": r, "variant": name, "batch": b, **time_generation(lms[name], prompts[b], n_gen)})
        if shape == "tiny":
            samples.append({"round": r, "variant": "greedy_generate (before)", "batch": 1, "prefill_tok_s": None,
                            "decode_tok_s": time_greedy_generate(nets["fake_quant"], prompts[1][0], context)})
        print(f"  {shape} threads={threads} round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    return {"samples": samples,
            "breakdown": {k: breakdown(lms[k], nets[k], n_prompt) for k in ("packed_a8_1step", "packed_a8_cells", "fake_quant")}}


def run_worker(shape, ckpt, threads, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.generation_speed", "--worker", shape, "--worker_ckpt", ckpt, "--threads",
           str(threads), "--batches", args.batches, "--n_prompt", str(args.n_prompt), "--n_gen", str(args.n_gen),
           "--rounds", str(args.rounds)]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), GLOG_v="3")
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, cwd=ROOT, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"worker {shape} threads={threads} failed (exit {res.returncode})")
    return json.loads(res.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------ llama.cpp (optional)
def tokenizer_problem(shape, context):
    """None when the GGUF export can find the tokenizer it embeds, else why not."""
    from bitcpm_ms.app.artifacts import resolve
    from bitcpm_ms.errors import ConfigError
    try:
        resolve(config_for(shape, context)).need_tokenizer()
    except ConfigError as err:
        return f"{err} (the GGUF carries the tokenizer: run `bash run/setup.sh` first)"
    return None


def llamacpp_columns(shape, ckpt, context, threads, args, work):
    """{threads: llama-bench result} for a TQ2_0 export of the checkpoint (the tokenizer checked by
    tokenizer_problem), or a reason string."""
    try:
        from benchmarks import llamacpp
        from bitcpm_ms.app.gguf_export import export_gguf
    except ImportError as err:
        return f"skipped: {err} (needs benchmarks/llamacpp.py and bitcpm_ms.app.gguf_export from the GGUF work)"
    llamacpp.build()
    gguf = os.path.join(work, f"{shape}-tq2_0.gguf")
    export_gguf(config_for(shape, context), ckpt, gguf, gguf_type="tq2_0", embedding_type="f16", log=lambda m: None)
    return {t: llamacpp.bench(gguf, t, args.n_prompt, args.n_gen, args.rounds) for t in threads}


# ------------------------------------------------------------------ tables
def summarize(samples):
    groups = collections.defaultdict(list)
    for s in samples:
        groups[(s["variant"], s["batch"])].append(s)
    rows = []
    for (variant, batch), ss in groups.items():
        row = {"variant": variant, "batch": batch}
        for key in ("prefill_tok_s", "decode_tok_s", "decode_ms_per_call", "host_ms_per_step"):
            vals = [s[key] for s in ss if s.get(key) is not None]
            if vals:
                row[key] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
        rows.append(row)
    return rows


def _cell(stat):
    return "-" if stat is None else f"{stat['median']:,.1f} ({stat['min']:,.1f}-{stat['max']:,.1f})"


def format_tables(result) -> str:
    lines = ["| shape | threads | variant | batch | prefill tok/s | decode tok/s | decode ms/graph call |",
             "|---|---|---|---|---|---|---|"]
    for (shape, threads), run in result["runs"].items():
        for row in run["table"]:
            lines.append(f"| {shape} | {threads} | {row['variant']} | {row['batch']} | {_cell(row.get('prefill_tok_s'))} "
                         f"| {_cell(row.get('decode_tok_s'))} | {_cell(row.get('decode_ms_per_call'))} |")
        lc = result["llamacpp"].get(shape)
        if isinstance(lc, dict) and str(threads) in {str(k) for k in lc}:
            b = lc[threads] if threads in lc else lc[str(threads)]
            lines.append(f"| {shape} | {threads} | llama.cpp TQ2_0 | 1 | {b['prefill']['mean_tok_s']:,.1f} "
                         f"| {b['decode']['mean_tok_s']:,.1f} | {1e3 / b['decode']['mean_tok_s']:,.2f} |")
    for shape, lc in result["llamacpp"].items():
        if isinstance(lc, str):
            lines.append(f"\nllama.cpp ({shape}): {lc}")
    lines += [""] + [f"- {k}: {v:.1f}x" for k, v in result.get("ratios", {}).items()]
    return "\n".join(lines)


def ratios(result) -> dict:
    """The issue's targets as ratios of median decode tokens/s (same shape, threads and batch)."""
    out = {}
    for (shape, threads), run in result["runs"].items():
        med = {(r["variant"], r["batch"]): r["decode_tok_s"]["median"] for r in run["table"] if "decode_tok_s" in r}
        base = med.get(("greedy_generate (before)", 1))
        for variant in VARIANTS:
            if base and (variant, 1) in med:
                out[f"{shape} {threads}T batch 1: {variant} decode vs greedy_generate"] = med[(variant, 1)] / base
        for fast, slow, what in (("packed_a8_1step", "packed_a8_cells", "one op per layer vs per-cell decode"),
                                 ("packed_a8", "packed_a8_1step", "8 tokens per graph call vs 1"),
                                 ("packed_a8_f16head", "packed_a8", "float16 head vs float32")):
            if (fast, 1) in med and (slow, 1) in med:
                out[f"{shape} {threads}T batch 1: {what}"] = med[(fast, 1)] / med[(slow, 1)]
        lc = result["llamacpp"].get(shape)
        bench = lc.get(threads, lc.get(str(threads))) if isinstance(lc, dict) else None
        for variant in ("packed_a8", "packed_a8_f16head"):
            if bench and (variant, 1) in med:
                out[f"{shape} {threads}T batch 1: llama.cpp TQ2_0 decode vs {variant} (slower by)"] = \
                    bench["decode"]["mean_tok_s"] / med[(variant, 1)]
        for b in sorted({b for _, b in med}):
            for packed in ("packed_a8", "packed_w"):
                if (packed, b) in med and ("fake_quant", b) in med:
                    out[f"{shape} {threads}T batch {b}: {packed} vs fake_quant decode"] = \
                        med[(packed, b)] / med[("fake_quant", b)]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="tiny,100m")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--n_prompt", type=int, default=128)
    ap.add_argument("--n_gen", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no_llamacpp", action="store_true")
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "generation_speed.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker_ckpt", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, args.worker_ckpt, int(args.threads), batches, args.n_prompt,
                                args.n_gen, args.rounds)))
        return 0
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    threads = [int(t) for t in args.threads.split(",")]
    work = tempfile.mkdtemp(prefix="generation_speed_")
    context = args.n_prompt + args.n_gen
    result = {"n_prompt": args.n_prompt, "n_gen": args.n_gen, "rounds": args.rounds, "group_size": GROUP,
              "cpu": _cpu_name(), "shapes": {}, "runs": {}, "llamacpp": {}}
    for shape in args.shapes.split(","):
        skip = "--no_llamacpp" if args.no_llamacpp else tokenizer_problem(shape, context)
        if skip and not args.no_llamacpp:      # said now, not after the workers
            print(f"the llama.cpp column of {shape} will be skipped: {skip}", file=sys.stderr, flush=True)
        result["shapes"][shape] = prep = prepare_checkpoint(shape, context, work)
        for t in threads:
            run = run_worker(shape, prep["checkpoint"], t, args)
            run["table"] = summarize(run["samples"])
            result["runs"][(shape, t)] = run
        result["llamacpp"][shape] = (f"skipped: {skip}" if skip else
                                     llamacpp_columns(shape, prep["checkpoint"], context, threads, args, work))
    result["ratios"] = ratios(result)
    text = format_tables(result)
    result["runs"] = {f"{s}/threads={t}": v for (s, t), v in result["runs"].items()}
    result["targets"], result["machine"] = generation_targets(result), machine_info()
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, default=str)
    print(text)
    print(f"wrote {args.json}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
