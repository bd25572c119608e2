#!/usr/bin/env python3
"""Generation speed: KV-cache prefill and decode (bitcpm_ms.inference) vs today's `greedy_generate`
and vs llama.cpp TQ2_0 on the same weights, measured fairly (issue 26).

    python3 -m benchmarks.generation_speed [--shapes tiny,100m] [--threads 1,2] [--isa best,avx2]
        [--variants ...] [--batches 1,8] [--n_prompt 128] [--n_gen 128] [--rounds 3] [--no_llamacpp]
        [--llama_poll P] [--bitnet_dir DIR] [--no_breakdown] [--json benchmarks/results/generation_speed.json]

Each shape is one set of random latent weights (speed does not depend on training), group size 256,
saved as a checkpoint that every variant loads (the variants: benchmarks/generation_worker.py). One
worker process per (shape, threads, ISA), pinned to that many cores; the workers of a (shape, threads)
are started together and run one round per request, and llama-bench runs one round after them, so
the rounds of both sides interleave: ours (every ISA), llama.cpp, ours, llama.cpp, ...
Fair measurement: both sides prefill n_prompt tokens from an empty cache and decode n_gen tokens at
positions n_prompt .. n_prompt + n_gen - 1 (llama-bench -d n_prompt); threads are set on both sides
(-t; ours: affinity, MindSpore runtime_num_threads, kernels.set_num_threads) and recorded, and so is
llama-bench's --poll (its workers spin between nodes by default, which collapses it on a machine
with more runnable threads than cores: --llama_poll 0); median,
mean and min-max are reported for both; the ratio to llama.cpp is taken per round (round r against
round r) and the targets' verdicts come from the spread of those ratios (benchmarks/fair_compare.py).
The JSON records the CPU model and SIMD flags, the load average at start and at the end, the
versions (Python, numpy, MindSpore, llama-cpp-python's llama.cpp and its build commit).
--bitnet_dir: a bitnet.cpp build (benchmarks/generation_bitnet.py): its I2_S kernel joins every round,
after llama.cpp's, at the same positions (llama-batched-bench), and the JSON gets ours / I2_S per round.
Breakdown (batch 1, the best ISA): MindSpore Profiler op times of the decode step
(benchmarks/generation_breakdown.py).
"""
import argparse
import os
import shutil
import sys
import tempfile

from benchmarks.fair_compare import ratio_text, stats
from benchmarks.generation_worker import GROUP, VARIANTS, Worker, prepare_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def summarize(samples):
    """Rows per (variant, batch): median, mean, min, max of each quantity over the rounds."""
    keys = sorted({(s["variant"], s["batch"]) for s in samples}, key=lambda k: (str(k[0]), k[1]))
    rows = []
    for variant, batch in keys:
        ss = [s for s in samples if s["variant"] == variant and s["batch"] == batch]
        row = {"variant": variant, "batch": batch}
        for key in ("prefill_tok_s", "decode_tok_s", "decode_ms_per_call", "host_ms_per_step"):
            st = stats(s.get(key) for s in ss)
            if st:
                row[key] = st
        rows.append(row)
    return rows


def _cell(st):
    return "-" if not st else f"{st['median']:,.1f} / {st['mean']:,.1f} ({st['min']:,.1f}-{st['max']:,.1f})"


def format_tables(result) -> str:
    lines = ["prefill / decode tokens/s: median / mean (min-max over rounds)", "",
             "| shape | threads | ISA | variant | batch | prefill tok/s | decode tok/s | decode ms/graph call |",
             "|---|---|---|---|---|---|---|---|"]
    for key, run in result["runs"].items():
        shape, threads, isa = key.split("/")
        for row in run["table"]:
            lines.append(f"| {shape} | {threads} | {isa} | {row['variant']} | {row['batch']} "
                         f"| {_cell(row.get('prefill_tok_s'))} | {_cell(row.get('decode_tok_s'))} "
                         f"| {_cell(row.get('decode_ms_per_call'))} |")
    for key, bn in result.get("bitnet", {}).items():
        shape, threads = key.split("/")
        lines.append(f"| {shape} | {threads} | native | bitnet.cpp I2_S | 1 "
                     f"| {_cell(bn['table'].get('prefill_tok_s'))} | {_cell(bn['table'].get('decode_tok_s'))} | - |")
    for key, lc in result["llamacpp"].items():
        if isinstance(lc, dict):
            shape, threads = key.split("/")
            lines.append(f"| {shape} | {threads} | {lc.get('isa', '')} | llama.cpp TQ2_0 | 1 "
                         f"| {_cell(lc['table'].get('prefill_tok_s'))} | {_cell(lc['table'].get('decode_tok_s'))} | - |")
        else:
            lines.append(f"\nllama.cpp ({key}): {lc}")
    lines += ["", "ours / llama.cpp TQ2_0, per-round ratio: median (min-max)"]
    lines += [f"- {k}: {ratio_text(c)}" for k, c in result.get("targets", {}).items()]
    if result.get("bitnet_ratios"):
        lines += ["", "ours / bitnet.cpp I2_S, per-round ratio: median (min-max)"]
        lines += [f"- {k}: {ratio_text(c)}" for k, c in result["bitnet_ratios"].items()]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="tiny,100m")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--isa", default="best,avx2", help="best and/or avx2 (kernels capped at AVX2)")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--n_prompt", type=int, default=128)
    ap.add_argument("--n_gen", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no_llamacpp", action="store_true")
    ap.add_argument("--llama_poll", type=int, default=None, help="llama-bench --poll (default: its own, 50)")
    ap.add_argument("--bitnet_dir", default=None,
                    help="a bitnet.cpp build (bin/llama-quantize, bin/llama-batched-bench)")
    ap.add_argument("--no_breakdown", action="store_true")
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "generation_speed.json"))
    args = ap.parse_args(argv)
    from benchmarks import generation_llamacpp as glc
    from benchmarks.machine import start_info, write_results
    start = start_info()
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    threads = [int(t) for t in args.threads.split(",")]
    isas = args.isa.split(",")
    variants = args.variants.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    work = tempfile.mkdtemp(prefix="generation_speed_")
    context = args.n_prompt + args.n_gen
    result = {"n_prompt": args.n_prompt, "n_gen": args.n_gen, "rounds": args.rounds, "group_size": GROUP,
              "decode_positions": [args.n_prompt, context - 1], "shapes": {}, "runs": {}, "llamacpp": {},
              "breakdown": {}}
    samples, llama, bitnet = {}, {}, {}
    if args.bitnet_dir:
        from benchmarks import generation_bitnet as gbn
        result["bitnet"] = {}
    for shape in args.shapes.split(","):
        skip = "--no_llamacpp" if args.no_llamacpp else glc.tokenizer_problem(shape, context)
        if skip and not args.no_llamacpp:
            print(f"the llama.cpp column of {shape} will be skipped: {skip}", file=sys.stderr, flush=True)
        result["shapes"][shape] = prep = prepare_checkpoint(shape, context, work)
        gguf = None if skip else glc.export_tq2(shape, prep["checkpoint"], context, work)
        i2s = gbn.export_i2s(shape, prep["checkpoint"], context, work, args.bitnet_dir) if args.bitnet_dir else None
        for t in threads:
            workers = {isa: Worker(shape, prep["checkpoint"], t, isa, variants, batches, args.n_prompt, args.n_gen)
                       for isa in isas}
            rounds, bn_rounds = [], []
            for r in range(args.rounds):
                for isa, w in workers.items():
                    samples.setdefault((shape, t, isa), []).extend(w.ask(f"round {r}"))
                if gguf:
                    rounds.append(glc.bench_round(gguf, t, args.n_prompt, args.n_gen, poll=args.llama_poll))
                if i2s:
                    bn_rounds.append(gbn.bench_round(i2s, t, args.n_prompt, args.n_gen, args.bitnet_dir))
                print(f"  {shape} threads={t} round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
            if not args.no_breakdown:
                result["breakdown"][f"{shape}/{t}"] = workers[isas[0]].ask("breakdown")
            for w in workers.values():
                w.close()
            if gguf:
                llama[(shape, t)] = rounds
                result["llamacpp"][f"{shape}/{t}"] = {
                    "rounds": rounds, "isa": "native",  # GGML_NATIVE build: every SIMD flag of this CPU
                    "table": {q: stats(r[q] for r in rounds) for q in ("prefill_tok_s", "decode_tok_s")}}
            elif skip:
                result["llamacpp"][f"{shape}/{t}"] = f"skipped: {skip}"
            if i2s:
                bitnet[(shape, t)] = bn_rounds
                result["bitnet"][f"{shape}/{t}"] = {"rounds": bn_rounds, "table": gbn.table(bn_rounds),
                                                    "format": "I2_S", "harness": "llama-batched-bench"}
    for (shape, t, isa), ss in samples.items():
        result["runs"][f"{shape}/{t}/{isa}"] = {"samples": ss, "table": summarize(ss)}
    result["targets"] = glc.targets(samples, llama)
    if bitnet:
        result["bitnet_ratios"] = gbn.ratios(samples, bitnet, glc.HEADLINE_VARIANTS)
    from benchmarks import llamacpp
    result["versions"] = {"llama_cpp_python": llamacpp.VERSION}
    text = format_tables(result)
    write_results(result, args.json, start)
    print(text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
