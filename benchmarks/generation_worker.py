"""The measuring side of benchmarks/generation_speed.py: one process per (shape, threads, ISA), pinned to
`threads` cores, that loads the variants once, compiles their graphs, then runs one round of every
variant per command it reads, so that the parent can interleave our rounds with llama.cpp's.

    python3 -m benchmarks.generation_worker SHAPE CKPT THREADS ISA VARIANTS BATCHES N_PROMPT N_GEN
    stdin:  "round R" | "breakdown" | "quit"        stdout: one "@@" + JSON line per command (and "ready")

Variants (the checkpoint is converted per variant):
  fake_quant         the QAT model as trained (TernaryLinear re-quantizes its weight in every call);
  packed_w           convert_model, weight-only ternary kernel;
  packed_a8          convert_model of the same weights trained with act_bits=8, W1.58A8 kernel;
    packed_* decode with one DecodeModel op per graph call of 16 greedy tokens (the CPU
    defaults: CachedLM decode_steps), float32 head;
  packed_a8_f16head  packed_a8 with the float16 head (head_dtype; llama.cpp's F16 output precision);
  packed_a8_f16      packed_a8 with the float16 head and float16 KV caches (kv_dtype): llama.cpp's
                     defaults (F16 output, F16 cache), the like-for-like column;
  packed_a8_1step    packed_a8 at one token per graph call (what sampling runs);
  packed_a8_cells    the packed W1.58A8 model through its own cells (one op per projection, fused
                     attention, one token per call): the form before the whole-layer op.
ISA: "best" (what the CPU has) or "avx2" (kernels.set_max_isa(MAX_ISA_AVX2): the AVX2 path on an
AVX-512 CPU; the DecodeLayer op and the heads run through the same capped library).
Prompts: n_prompt random ids per row; greedy decoding of n_gen tokens, no EOS, so decode covers
positions n_prompt .. n_prompt + n_gen - 1. Prefill tokens/s = prompt tokens / prefill graph time;
decode tokens/s = tokens made by decode steps / step graph time (host sampling excluded).
"""
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_YAML = os.path.join(ROOT, "yaml_configs", "bitcpm_tiny_cpu.yaml")
GROUP = 256     # = a TQ2_0 block: the llama.cpp export needs no re-quantization
SHAPES = {
    "tiny": {},     # the tiny YAML's model: hidden 256, 4 layers, 4/2 heads, FFN 768, vocab 8192 (7.3M)
    "100m": {"model.model_config.hidden_size": 768, "model.model_config.num_layers": 12,
             "model.model_config.num_heads": 12, "model.model_config.n_kv_heads": 4,
             "model.model_config.intermediate_size": 2304, "model.model_config.dim_model_base": 256},
}
VARIANTS = ("fake_quant", "packed_w", "packed_a8", "packed_a8_f16head", "packed_a8_f16", "packed_a8_1step",
            "packed_a8_cells")
BREAKDOWN_VARIANTS = ("packed_a8_1step", "packed_a8_cells", "fake_quant")


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


def load_variants(shape, ckpt, context, variants):
    from bitcpm_ms.app.artifacts import load_model
    from bitcpm_ms.inference import CachedLM
    from bitcpm_ms.quant.convert import convert_model
    nets, lms = {}, {}
    if "fake_quant" in variants:
        nets["fake_quant"] = load_model(config_for(shape, context), ckpt)[0]
    if "packed_w" in variants:
        nets["packed_w"] = convert_model(load_model(config_for(shape, context), ckpt)[0])
    a8 = [v for v in variants if v.startswith("packed_a8")]
    if a8:
        nets["packed_a8"] = convert_model(load_model(config_for(shape, context, act_bits=8), ckpt)[0])
    extra = {"packed_a8": {}, "packed_a8_f16head": dict(head_dtype="float16"),
             "packed_a8_f16": dict(head_dtype="float16", kv_dtype="float16"),
             "packed_a8_1step": dict(decode_steps=1), "packed_a8_cells": dict(fused_layers=False)}
    for name in variants:
        if name in extra:
            nets[name] = nets["packed_a8"]
            lms[name] = CachedLM(nets[name], **extra[name])
        else:
            lms[name] = CachedLM(nets[name])
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


def _reply(obj):
    print("@@" + json.dumps(obj), flush=True)


def serve(shape, ckpt, threads, isa, variants, batches, n_prompt, n_gen):
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:threads]))
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU", runtime_num_threads=threads)
    from bitcpm_ms.kernels import MAX_ISA_AVX2, MAX_ISA_BEST, set_max_isa, set_num_threads
    set_num_threads(threads)
    set_max_isa(MAX_ISA_AVX2 if isa == "avx2" else MAX_ISA_BEST)
    context = n_prompt + n_gen
    nets, lms = load_variants(shape, ckpt, context, variants)
    rng = np.random.default_rng(0)
    prompts = {b: rng.integers(4, 8000, (b, n_prompt)).tolist() for b in batches}
    for name in variants:                                         # compile every shape once
        for b in batches:
            time_generation(lms[name], prompts[b], 2)
    _reply({"ready": True})
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "round":
            r, samples = int(cmd[1]), []
            for name in variants:
                for b in batches:
                    samples.append({"round": r, "variant": name, "batch": b,
                                    **time_generation(lms[name], prompts[b], n_gen)})
            if shape == "tiny" and "fake_quant" in nets:
                samples.append({"round": r, "variant": "greedy_generate (before)", "batch": 1, "prefill_tok_s": None,
                                "decode_tok_s": time_greedy_generate(nets["fake_quant"], prompts[1][0], context)})
            _reply(samples)
        elif cmd[0] == "breakdown":
            from benchmarks.generation_breakdown import breakdown
            _reply({k: breakdown(lms[k], nets[k], n_prompt) for k in BREAKDOWN_VARIANTS if k in lms})


class Worker:
    """The parent's handle on one serving worker process."""

    def __init__(self, shape, ckpt, threads, isa, variants, batches, n_prompt, n_gen):
        import subprocess
        cmd = [sys.executable, "-m", "benchmarks.generation_worker", shape, ckpt, str(threads), isa,
               ",".join(variants), ",".join(str(b) for b in batches), str(n_prompt), str(n_gen)]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), GLOG_v="3")
        self.name = f"{shape} threads={threads} isa={isa}"
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
                                     env=env)
        self._read()                                              # "ready": loaded and compiled

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"worker {self.name} ended (exit {self.proc.wait()})")

    def ask(self, command: str):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()


if __name__ == "__main__":
    a = sys.argv[1:]
    serve(a[0], a[1], int(a[2]), a[3], a[4].split(","), [int(b) for b in a[5].split(",")], int(a[6]), int(a[7]))
