#!/usr/bin/env python3
"""QAT overhead: tokens/s of the same model and batch trained in graph mode, QAT on vs off.

    python -m benchmarks.qat_overhead [--configs tiny,30m] [--steps 5] [--rounds 8] [--fused] [--json PATH]

Each round times `--steps` optimizer steps with QAT off, then on (after a warm-up that includes
graph compilation); rounds alternate so that machine noise hits both alike. The overhead uses
the median step time of each, with a 95% bootstrap interval over rounds (benchmarks.machine) and
the verdict on the target (<= 5%, or <= 3% with --fused) from that interval.
BitCPM-CANN reports 4.5% on 910B (Table 4). --fused: the model and optimizer as the tiny YAML ships
them on CPU (cpu_fused_ops, CpuFusedAdamW; docs/cpu_training.md), where everything but the quantizer
got faster, so its share is larger; default JSON results/qat_overhead_fused.json.
"""
import argparse
import os
import statistics
import time

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")

from mindformers.core.optim import AdamW  # noqa: E402

from benchmarks.machine import bootstrap_ci, median_ratio, target, time_calls, write_results  # noqa: E402
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM  # noqa: E402
from bitcpm_ms.models.flops import count_params, train_flops_per_token  # noqa: E402
from bitcpm_ms.training import BitCPMTrainOneStepCell, CpuFusedAdamW  # noqa: E402

CONFIGS = {
    # the tiny YAML's model (yaml_configs/bitcpm_tiny_cpu.yaml)
    "tiny": dict(hidden_size=256, num_layers=4, num_heads=4, n_kv_heads=2, intermediate_size=768,
                 vocab_size=8192, seq_length=256, batch_size=8, dim_model_base=64),
    # ~30M parameters
    "30m": dict(hidden_size=512, num_layers=8, num_heads=8, n_kv_heads=2, intermediate_size=1536,
                vocab_size=8192, seq_length=256, batch_size=8, dim_model_base=128),
}


def build_step(dims, qat, group_size, act_bits, fused=False):
    qat_config = {"group_size": group_size, "act_bits": act_bits} if qat else None
    cfg = BitCPMConfig(**dims, scale_emb=12, scale_depth=1.4, qat_config=qat_config, cpu_fused_ops=fused)
    net = BitCPMForCausalLM(cfg)
    net.set_train(True)
    opt = (CpuFusedAdamW if fused else AdamW)(net.trainable_params(), learning_rate=1e-3)
    step = BitCPMTrainOneStepCell(net, opt, use_clip_grad=True, fused_norm=fused)
    step.set_train(True)
    return step, cfg


def bench(name, dims, steps, rounds, group_size, act_bits, fused=False):
    rng = np.random.default_rng(0)
    batch = ms.Tensor(rng.integers(0, dims["vocab_size"], (dims["batch_size"], dims["seq_length"] + 1)),
                      ms.int32)
    runs = {}
    for qat in (False, True):
        step, cfg = build_step(dims, qat, group_size, act_bits, fused)
        t0 = time.perf_counter()
        time_calls(step, (batch,), 2)           # compile + warm-up
        runs[qat] = {"step": step, "times": [], "compile_s": time.perf_counter() - t0}
    blocks = []
    for r in range(rounds):
        block = {}
        for qat in ((False, True) if r % 2 == 0 else (True, False)):      # order alternates
            block["qat" if qat else "fp"] = time_calls(runs[qat]["step"], (batch,), steps)
            runs[qat]["times"] += block["qat" if qat else "fp"]
        blocks.append(block)
    tokens = dims["batch_size"] * dims["seq_length"]
    fpt = train_flops_per_token(cfg)
    rows = {}
    for qat in (False, True):
        med = statistics.median(runs[qat]["times"])
        rows["qat" if qat else "fp"] = {"median_step_s": med, "tokens_per_s": tokens / med,
                                        "tflops": fpt * tokens / med / 1e12, "compile_s": runs[qat]["compile_s"]}
    overhead = 100.0 * (rows["qat"]["median_step_s"] / rows["fp"]["median_step_s"] - 1.0)
    q = {k: statistics.quantiles(runs[k]["times"], n=4) for k in (False, True)}
    spread = [100.0 * (q[True][i] / q[False][i] - 1.0) for i in (0, 2)]       # at the 1st and 3rd quartiles
    _, ratio_ci = bootstrap_ci(blocks, median_ratio("qat", "fp"))
    ci = [100.0 * (x - 1.0) for x in ratio_ci]
    bar = 3.0 if fused else 5.0
    return {"config": name, "params": count_params(cfg).total, "tokens_per_step": tokens, "fused": fused,
            "group_size": group_size, "act_bits": act_bits, "fp": rows["fp"], "qat": rows["qat"],
            "overhead_pct": overhead, "overhead_pct_ci95": ci, "overhead_pct_q1_q3": spread,
            "steps_timed_each": steps * rounds, "rounds": blocks, "load_1min_end": os.getloadavg()[0],
            "target": target(f"QAT step-time overhead, {name}{' (fused CPU ops)' if fused else ''}", overhead, ci, bar,
                             higher_is_better=False, unit="%",
                             method="median step times, 95% bootstrap over interleaved rounds")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny,30m")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--group_size", type=int, default=64)
    p.add_argument("--act_bits", type=int, default=None)
    p.add_argument("--fused", action="store_true", help="fused CPU ops + CpuFusedAdamW (the tiny YAML's setup)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    args.json = args.json or os.path.join(os.path.dirname(__file__), "results",
                                          "qat_overhead_fused.json" if args.fused else "qat_overhead.json")
    results = []
    for name in args.configs.split(","):
        if name not in CONFIGS:
            p.error(f"unknown config {name!r}; choose from {sorted(CONFIGS)}")
        results.append(bench(name, CONFIGS[name], args.steps, args.rounds, args.group_size, args.act_bits,
                             args.fused))
    print(f"\n{'config':8s} {'params':>8s} {'FP tok/s':>10s} {'QAT tok/s':>10s} {'FP TFLOP/s':>11s} "
          f"{'overhead':>9s} {'(95% CI)':>16s} {'target':>22s}")
    for r in results:
        t = r["target"]
        print(f"{r['config']:8s} {r['params'] / 1e6:7.1f}M {r['fp']['tokens_per_s']:10.0f} "
              f"{r['qat']['tokens_per_s']:10.0f} {r['fp']['tflops']:11.4f} {r['overhead_pct']:8.1f}% "
              f"({r['overhead_pct_ci95'][0]:.1f}..{r['overhead_pct_ci95'][1]:.1f}%) "
              f"{t['direction']} {t['bar']}%: {t['verdict']:>12s}")
    write_results({"method": {"steps": args.steps, "rounds": args.rounds}, "results": results,
                   "targets": [r["target"] for r in results]}, args.json)


if __name__ == "__main__":
    main()
