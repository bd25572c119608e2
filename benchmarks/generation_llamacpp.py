"""The llama.cpp side of benchmarks/generation_speed.py: a TQ2_0 export of the same checkpoint run by
llama-bench one round at a time (interleaved with ours by the caller), at the same positions (prefill
of n_prompt tokens at depth 0; decode of n_gen tokens at depth n_prompt, llama-bench -d), same thread
count; and the issue-26 targets computed from the paired rounds (benchmarks.fair_compare)."""
import os

from benchmarks.fair_compare import paired_ratios
from benchmarks.generation_worker import config_for

# issue 26: (shape, quantity) -> (target, stretch) as ours / llama.cpp
TARGETS = {("100m", "decode_tok_s"): (1.0, 1.3), ("tiny", "decode_tok_s"): (0.5, None),
           ("100m", "prefill_tok_s"): (1.0, None)}
HEADLINE_VARIANTS = ("packed_a8", "packed_a8_f16head", "packed_a8_f16")


def tokenizer_problem(shape, context):
    """None when the GGUF export can find the tokenizer it embeds, else why not."""
    from bitcpm_ms.app.artifacts import resolve
    from bitcpm_ms.errors import ConfigError
    try:
        resolve(config_for(shape, context)).need_tokenizer()
    except ConfigError as err:
        return f"{err} (the GGUF carries the tokenizer: run `bash run/setup.sh` first)"
    return None


def export_tq2(shape, ckpt, context, work) -> str:
    """The checkpoint as a TQ2_0 GGUF (ternary projections TQ2_0, embeddings and head F16); builds
    llama.cpp on first use (benchmarks/llamacpp.py)."""
    from benchmarks import llamacpp
    from bitcpm_ms.app.gguf_export import export_gguf
    llamacpp.build()
    gguf = os.path.join(work, f"{shape}-tq2_0.gguf")
    export_gguf(config_for(shape, context), ckpt, gguf, gguf_type="tq2_0", embedding_type="f16", log=lambda m: None)
    return gguf


def bench_round(gguf, threads, n_prompt, n_gen, reps=1, poll=None) -> dict:
    from benchmarks import llamacpp
    b = llamacpp.bench(gguf, threads, n_prompt, n_gen, reps, depth=n_prompt, poll=poll)
    return {"prefill_tok_s": b["prefill"]["mean_tok_s"], "decode_tok_s": b["decode"]["mean_tok_s"],
            "decode_depth": b["decode"]["depth"], "threads": b["decode"]["threads"], "build": b["decode"]["build"],
            "backends": b["decode"]["backends"], "cpu_info": b["decode"]["cpu_info"], "poll": b["decode"]["poll"],
            "kv_types": b["decode"]["kv_types"]}


def targets(runs: dict, llama: dict) -> dict:
    """runs[(shape, threads, isa)] = our samples; llama[(shape, threads)] = its rounds. For every
    headline variant at batch 1: ours / llama.cpp per round, with the verdicts of TARGETS."""
    return paired_ratios(runs, llama, HEADLINE_VARIANTS, TARGETS)
