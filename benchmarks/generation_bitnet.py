"""The bitnet.cpp side of benchmarks/generation_speed.py (`--bitnet_dir DIR`): Microsoft's I2_S kernel
on the same checkpoint, one round at a time, interleaved with ours and llama.cpp's, at the same
positions.

bitnet.cpp is not built by this repository: its public source builds here only in its October 2024
form (microsoft/BitNet c82b5e66 with its llama.cpp fork 406a5036) and only with clang >= 18
(docs/generation.md, "bitnet.cpp"). DIR is that build: DIR/bin holds `llama-quantize` and
`llama-batched-bench`. The fork's llama-bench has no `-d`, so the rounds use its
`llama-batched-bench -npp N_PROMPT -ntg N_GEN -npl 1`: a prefill of n_prompt tokens from an empty
cache, then n_gen decode steps at positions n_prompt .. n_prompt + n_gen - 1, as ours and as
llama-bench -d. The I2_S GGUF is made by the fork's own llama-quantize from a float32 export of the
checkpoint (embeddings F16), the route its README gives; I2_S keeps one scale per tensor (ours: one
per 256 weights), the same ternary codes.
"""
import os
import re
import subprocess

from benchmarks.fair_compare import paired_ratios, stats
from benchmarks.generation_worker import config_for

ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*1\s*\|\s*\d+\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|"
                 r"\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|")


class BitnetError(RuntimeError):
    pass


def _tool(bitnet_dir: str, name: str) -> str:
    path = os.path.join(bitnet_dir, "bin", name)
    if not os.access(path, os.X_OK):
        raise BitnetError(f"--bitnet_dir {bitnet_dir}: {path} is missing (build the bitnet.cpp targets "
                          "llama-quantize and llama-batched-bench: docs/generation.md, 'bitnet.cpp')")
    return path


def _run(cmd, env=None) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise BitnetError(f"{' '.join(str(c) for c in cmd)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return r.stdout + r.stderr


def export_i2s(shape, ckpt, context, work, bitnet_dir) -> str:
    """The checkpoint as an I2_S GGUF: our float32 GGUF export, then the fork's llama-quantize."""
    from bitcpm_ms.app.gguf_export import export_gguf
    quantize = _tool(bitnet_dir, "llama-quantize")
    _tool(bitnet_dir, "llama-batched-bench")
    f32 = os.path.join(work, f"{shape}-f32.gguf")
    out = os.path.join(work, f"{shape}-i2_s.gguf")
    export_gguf(config_for(shape, context), ckpt, f32, gguf_type="f32", log=lambda m: None)
    _run([quantize, "--token-embedding-type", "f16", f32, out, "I2_S", "1"])
    os.remove(f32)
    return out


def bench_round(gguf, threads, n_prompt, n_gen, bitnet_dir) -> dict:
    """One llama-batched-bench run: prefill and decode tokens/s at the generation_speed positions."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))   # the build uses OpenMP for its threads
    text = _run([_tool(bitnet_dir, "llama-batched-bench"), "-m", gguf, "-c", n_prompt + n_gen + 16, "-b", 512,
                 "-ub", 512, "-npp", n_prompt, "-ntg", n_gen, "-npl", 1, "-t", threads, "-tb", threads], env=env)
    return {**parse_batched_bench(text, n_prompt, n_gen), "threads": threads}


def parse_batched_bench(text: str, n_prompt: int, n_gen: int) -> dict:
    """llama-batched-bench's table row | PP | TG | B=1 | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | ...
    for this PP and TG -> {"prefill_tok_s": S_PP, "decode_tok_s": S_TG}."""
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m and int(m.group(1)) == n_prompt and int(m.group(2)) == n_gen:
            return {"prefill_tok_s": float(m.group(4)), "decode_tok_s": float(m.group(6))}
    raise BitnetError(f"no PP {n_prompt} / TG {n_gen} row in llama-batched-bench's output:\n{text[-1500:]}")


def table(rounds) -> dict:
    return {q: stats(r[q] for r in rounds) for q in ("prefill_tok_s", "decode_tok_s")}


def ratios(runs: dict, bitnet: dict, variants) -> dict:
    """ours / bitnet.cpp I2_S per round at batch 1, no target (the issue asks for the column, reported
    as it is): runs[(shape, threads, isa)] = our samples, bitnet[(shape, threads)] = its rounds."""
    return paired_ratios(runs, bitnet, variants, suffix=" vs bitnet.cpp I2_S")
