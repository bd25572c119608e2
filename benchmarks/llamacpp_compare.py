#!/usr/bin/env python3
"""Prefill and decode speed: our GGUF export run by llama.cpp (TQ2_0, F16) vs our packed MindSpore model.

    python3 -m benchmarks.llamacpp_compare [--shapes tiny,100m] [--threads 1,2] [--n_prompt 128]
        [--n_gen 64] [--reps 5] [--rounds 2] [--json benchmarks/results/llamacpp_compare.json]

Run from the repository root (`-m`, so `benchmarks.llamacpp` imports). Each shape is one set of
random latent weights (speed does not depend on training), quantized at group size 256 and
exported twice (`export_gguf`, ternary projections TQ2_0 or F16, embeddings/head F16). llama.cpp
numbers come from `llama-bench` (pp = prefill of n_prompt tokens, tg = decode of n_gen tokens with
its KV cache after n_prompt tokens, `-d n_prompt`: the positions our decode covers; `-t threads`). Ours run in a subprocess pinned to `threads` cores (sched_setaffinity,
MindSpore `runtime_num_threads`, `kernels.set_num_threads`): the packed model (`convert_model`,
fused C++ ternary matmul, weight-only and W1.58A8) in graph mode,
greedy generation with the KV cache (`bitcpm_ms.inference`, no EOS):
  * prefill: the prefill graph over the n_prompt-token prompt;
  * decode: tokens made by the decode-step graph per second (host sampling excluded).
Variants are interleaved round by round (llama.cpp, then ours, each round); the table shows the
median / mean (min-max) over rounds of each round's mean, and the JSON keeps every sample, the machine
(CPU model, SIMD flags, load average at start and end) and the versions.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_YAML = os.path.join(ROOT, "yaml_configs", "bitcpm_tiny_cpu.yaml")
SHAPES = {
    # the tiny YAML's model: 7.3M parameters
    "tiny": {},
    # ~95M parameters: hidden 768, 12 layers, GQA 12/4 heads, SwiGLU 2304 (all multiples of 256)
    "100m": {"model.model_config.hidden_size": 768, "model.model_config.num_layers": 12,
             "model.model_config.num_heads": 12, "model.model_config.n_kv_heads": 4,
             "model.model_config.intermediate_size": 2304, "model.model_config.dim_model_base": 256},
}


def _config(shape: str, seq_length: int = None, act_bits=None):
    from bitcpm_ms.app.config import load_config
    ov = {**SHAPES[shape], "quant.group_size": 256, "quant.act_bits": act_bits,
          "model.model_config.batch_size": 1}
    if seq_length:
        ov["model.model_config.seq_length"] = seq_length
    return load_config(TINY_YAML, ov)


def prepare(shape: str, work: str) -> dict:
    """Random model of `shape` -> checkpoint + TQ2_0 and F16 GGUFs; returns their paths and size."""
    import mindspore as ms
    from bitcpm_ms.app.artifacts import build_model
    from bitcpm_ms.app.gguf_export import export_gguf
    ms.set_seed(0)
    net = build_model(_config(shape))
    ckpt = os.path.join(work, f"{shape}.ckpt")
    ms.save_checkpoint(net, ckpt)
    out = {"checkpoint": ckpt, "params": int(sum(p.size for p in net.get_parameters()))}
    for kind in ("tq2_0", "f16"):
        path = os.path.join(work, f"{shape}-{kind}.gguf")
        s = export_gguf(_config(shape), ckpt, path, gguf_type=kind, embedding_type="f16", log=lambda m: None)
        out[kind] = {"path": path, "bytes": s["file_bytes"]}
    return out


def ours_worker(shape: str, ckpt: str, threads: int, n_prompt: int, n_gen: int, reps: int) -> dict:
    """In a fresh process: pin to `threads` cores, then time the packed model (see module doc)."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", runtime_num_threads=threads)
    from bitcpm_ms.app.artifacts import load_model
    from bitcpm_ms.inference import CachedLM, generate
    from bitcpm_ms.kernels import set_num_threads
    from bitcpm_ms.quant.convert import convert_model
    set_num_threads(threads)
    out = {}
    prompt = np.random.default_rng(0).integers(4, 8000, n_prompt).tolist()
    for act_bits in (None, 8):
        label = "packed_w158a8" if act_bits else "packed_weight_only"
        net, _ = load_model(_config(shape, n_prompt + n_gen, act_bits), ckpt)
        net.set_train(False)
        lm = CachedLM(convert_model(net))
        generate(lm, [prompt], max_new_tokens=n_gen, eos_token_id=None)      # compile + warm up
        prefill, decode = [], []
        for _ in range(reps):
            stats = generate(lm, [prompt], max_new_tokens=n_gen, eos_token_id=None).stats
            prefill.append(stats.prefill_tokens_per_s)
            decode.append(stats.decode_tokens_per_s)
        out[label] = {"prefill": {"mean_tok_s": statistics.mean(prefill), "samples_tok_s": prefill},
                      "decode": {"mean_tok_s": statistics.mean(decode), "samples_tok_s": decode}}
    return out


def run_ours(shape, ckpt, threads, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.llamacpp_compare", "--worker", shape, "--worker_ckpt", ckpt,
           "--threads", str(threads), "--n_prompt", str(args.n_prompt), "--n_gen", str(args.n_gen),
           "--reps", str(args.reps)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")))
    if res.returncode != 0:
        raise RuntimeError(f"worker failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="tiny,100m")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--n_prompt", type=int, default=128)
    ap.add_argument("--n_gen", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "llamacpp_compare.json"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker_ckpt", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(ours_worker(args.worker, args.worker_ckpt, int(args.threads), args.n_prompt,
                                     args.n_gen, args.reps)))
        return 0
    from benchmarks import llamacpp
    from benchmarks.machine import start_info, write_results
    start = start_info()
    llamacpp.build()
    shapes = args.shapes.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    work = tempfile.mkdtemp(prefix="llamacpp_compare_")
    prepared = {s: prepare(s, work) for s in shapes}
    rounds = []                                     # [{(shape, threads, impl, phase): mean tok/s}]
    raw = []
    for r in range(args.rounds):
        row = {}
        for s in shapes:
            for t in threads:
                for kind in ("tq2_0", "f16"):
                    b = llamacpp.bench(prepared[s][kind]["path"], t, args.n_prompt, args.n_gen, args.reps,
                                       depth=args.n_prompt)
                    raw.append({"round": r, "shape": s, "threads": t, "impl": f"llama.cpp {kind}", **b})
                    for phase in ("prefill", "decode"):
                        row[(s, t, f"llama.cpp {kind}", phase)] = b[phase]["mean_tok_s"]
                ours = run_ours(s, prepared[s]["checkpoint"], t, args)
                for impl, phases in ours.items():
                    raw.append({"round": r, "shape": s, "threads": t, "impl": f"ours {impl}", **phases})
                    for phase, v in phases.items():
                        row[(s, t, f"ours {impl}", phase)] = v["mean_tok_s"]
                print(f"round {r + 1}/{args.rounds} {s} threads={t} done", flush=True)
        rounds.append(row)
    table = []
    for key in rounds[0]:
        vals = [rd[key] for rd in rounds]
        table.append({"shape": key[0], "threads": key[1], "impl": key[2], "phase": key[3],
                      "median_tok_s": statistics.median(vals), "mean_tok_s": statistics.fmean(vals),
                      "min_tok_s": min(vals), "max_tok_s": max(vals)})
    result = {"n_prompt": args.n_prompt, "n_gen": args.n_gen, "reps": args.reps, "rounds": args.rounds,
              "llama_cpp_python_version": llamacpp.VERSION,
              "shapes": {s: {"params": prepared[s]["params"], **{k: prepared[s][k]["bytes"] for k in ("tq2_0", "f16")}}
                         for s in shapes},
              "table": table, "samples": raw}
    write_results(result, args.json, start)
    print(format_table(table))
    return 0


def format_table(table) -> str:
    """Markdown: one row per (shape, threads, impl), prefill and decode tok/s (median / mean, min-max)."""
    rows = {}
    for e in table:
        rows.setdefault((e["shape"], e["threads"], e["impl"]), {})[e["phase"]] = e
    lines = ["| shape | threads | implementation | prefill tok/s | decode tok/s |", "|---|---|---|---|---|"]
    for (s, t, impl), ph in rows.items():
        cell = lambda e: f"{e['median_tok_s']:,.1f} / {e['mean_tok_s']:,.1f} ({e['min_tok_s']:,.1f}-{e['max_tok_s']:,.1f})"
        lines.append(f"| {s} | {t} | {impl} | {cell(ph['prefill'])} | {cell(ph['decode'])} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
