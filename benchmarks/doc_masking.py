#!/usr/bin/env python3
"""Packed-document masking (use_eod_attn_mask_compression + actual_seq_len): its step-time cost and
whether it changes held-out bits per byte on the tiny model.

    python3 -m benchmarks.doc_masking [--part speed|bpb|both] [--steps 10] [--rounds 6]
                                      [--train_steps 300] [--seeds 1234,4321] [--json PATH]

speed: the tiny YAML's model and training step as it ships on CPU (ternary QAT g = 64, fused CPU
  ops, CpuFusedAdamW, global-norm clipping; batch 8 x 256), one real GCIDE batch with its document
  ends, trained with and without document masking. Rounds alternate the two variants (`--steps`
  timed steps each per round, after compile and warm-up) so machine noise hits both alike; the
  cost is the ratio of the median step times, with the ratios at the step-time quartiles as the
  spread. Target <= 5%; met or missed is computed here and written to the JSON.
bpb: the tiny YAML trained `--train_steps` steps through the real entry point (run/run_bitcpm.py),
  once with and once without masking, at each seed; the same seed gives both the same samples in
  the same order (same tokens). Both are then scored on the same held-out tokens: the validation
  split's labels that lie inside a document (a document's first token, which a masked model never
  predicts, is left out for both), each model with the attention it trained with. Bits per byte =
  summed NLL / ln 2 / (tokens x the manifest's bytes per token). The unmasked model's standard
  eval (every label, as eval.json reports it) is recorded beside it, and so is the unmasked model
  reading one document at a time (masked attention at evaluation only), as a prompt is read at
  inference. `--reuse` scores finished runs under --work without training them again.
The JSON records the machine, its load before and after each part, and the versions.
"""
import argparse
import math
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import mindspore as ms

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")

from mindformers.wrapper.wrapper import DataOrderWrapperCell  # noqa: E402

from benchmarks.machine import time_calls, write_results  # noqa: E402
from bitcpm_ms.data.config import config_from_yaml  # noqa: E402
from bitcpm_ms.data.dataset import build_dataset  # noqa: E402
from bitcpm_ms.data.documents import crossing_labels  # noqa: E402
from bitcpm_ms.data.manifest import has_document_column, read_manifest_file  # noqa: E402
from bitcpm_ms.data.packing import prepare_dataset  # noqa: E402
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM  # noqa: E402
from bitcpm_ms.training import BitCPMTrainOneStepCell, CpuFusedAdamW  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_YAML = os.path.join(REPO, "yaml_configs", "bitcpm_tiny_cpu.yaml")
TINY = dict(hidden_size=256, num_layers=4, num_heads=4, n_kv_heads=2, intermediate_size=768, vocab_size=8192,
            seq_length=256, batch_size=8, dim_model_base=64, eos_token_id=2, pad_token_id=0)
TARGET_PCT = 5.0
SWITCH = "--model.model_config.use_eod_attn_mask_compression"


def dataset_dir() -> str:
    """The tiny YAML's prepared GCIDE dataset (format 2: with actual_seq_len), prepared if missing."""
    cfg = config_from_yaml(TINY_YAML)
    man = read_manifest_file(cfg.output_dir) if os.path.isdir(cfg.output_dir or "") else None
    if man is not None and not has_document_column(man):
        sys.exit(f"{cfg.output_dir} was prepared before the actual_seq_len column; prepare it again: "
                 f"python3 run/prepare_data.py --config {TINY_YAML} --overwrite")
    return prepare_dataset(cfg, log=lambda m: print(m, flush=True))["output_dir"]


# ---------------------------------------------------------------- speed
def build_step(masked: bool):
    cfg = BitCPMConfig(**TINY, scale_emb=12, scale_depth=1.4, qat_config={"group_size": 64}, cpu_fused_ops=True,
                       use_eod_attn_mask_compression=masked)
    net = BitCPMForCausalLM(cfg)
    net.set_train(True)
    loss_net = DataOrderWrapperCell(["input_ids", "actual_seq_len"] if masked else ["input_ids"], net)
    opt = CpuFusedAdamW(net.trainable_params(), learning_rate=1e-3)
    step = BitCPMTrainOneStepCell(loss_net, opt, use_clip_grad=True, fused_norm=True)
    step.set_train(True)
    return step


def speed(data, steps, rounds):
    ids, ends = next(build_dataset(data, TINY["batch_size"], split="train", seed=0, documents=True)
                     .create_tuple_iterator(num_epochs=1, output_numpy=True))
    inputs = {False: (ms.Tensor(ids),), True: (ms.Tensor(ids), ms.Tensor(ends))}
    runs, load_before = {}, os.getloadavg()
    for masked in (False, True):
        step = build_step(masked)
        t0 = time.perf_counter()
        time_calls(step, inputs[masked], 3)            # compile + warm-up
        runs[masked] = {"step": step, "times": [], "compile_s": time.perf_counter() - t0}
    per_round = []                                     # cost of each round, from its own medians
    for r in range(rounds):
        now = {}
        for masked in ((False, True) if r % 2 == 0 else (True, False)):
            now[masked] = time_calls(runs[masked]["step"], inputs[masked], steps)
            runs[masked]["times"] += now[masked]
        per_round.append(100.0 * (statistics.median(now[True]) / statistics.median(now[False]) - 1.0))
    med = {m: statistics.median(runs[m]["times"]) for m in runs}
    quart = {m: statistics.quantiles(runs[m]["times"], n=4) for m in runs}
    cost = 100.0 * (med[True] / med[False] - 1.0)
    spread = [100.0 * (quart[True][i] / quart[False][i] - 1.0) for i in (0, 2)]
    tokens = TINY["batch_size"] * TINY["seq_length"]
    docs_per_row = float(np.mean((ends < TINY["seq_length"]).sum(axis=1) + 1))
    variant = lambda m: {"median_step_s": med[m], "q1_q3_step_s": [quart[m][0], quart[m][2]],  # noqa: E731
                         "tokens_per_s": tokens / med[m], "compile_s": runs[m]["compile_s"],
                         "steps_timed": len(runs[m]["times"])}
    return {"model": "tiny (7.3M, ternary QAT g=64, fused CPU ops, CpuFusedAdamW)", "batch": [8, 256],
            "documents_per_row_in_batch": docs_per_row, "plain": variant(False), "masked": variant(True),
            "cost_pct": cost, "cost_pct_at_q1_q3": spread, "cost_pct_per_round": per_round,
            "cost_pct_median_of_rounds": statistics.median(per_round), "target_pct": TARGET_PCT,
            "target_met": bool(cost <= TARGET_PCT), "load_before": load_before, "load_after": os.getloadavg()}


# ---------------------------------------------------------------- held-out bits per byte
def seeded_yaml(seed, work) -> str:
    """The tiny YAML with `seed` (initialization) and `train_dataset.seed` (data order) set. (The
    command line's `--seed` is generation's sampling seed, not the run's.)"""
    import yaml
    with open(TINY_YAML, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    cfg["seed"] = cfg["train_dataset"]["seed"] = int(seed)
    path = os.path.join(work, f"tiny_seed{seed}.yaml")
    os.makedirs(work, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


def train(out_dir, seed, masked, steps, work):
    cmd = [sys.executable, os.path.join(REPO, "run", "run_bitcpm.py"), "--config", seeded_yaml(seed, work),
           "--output_dir", out_dir, "--max_steps", str(steps), "--eval_after_train", "false", SWITCH,
           "true" if masked else "false", "--callbacks.BitCPMCheckpointMonitor.save_checkpoint_steps", str(steps)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_v="3", PYTHONPATH=REPO)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"training failed ({' '.join(cmd)}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return time.time() - t0


def load_trained(out_dir, masked):
    from bitcpm_ms.training.checkpoint_loading import load_weights
    from bitcpm_ms.app.resume import choose_start
    cfg = BitCPMConfig(**TINY, scale_emb=12, scale_depth=1.4, qat_config={"group_size": 64},
                       use_eod_attn_mask_compression=masked)
    net = BitCPMForCausalLM(cfg)
    load_weights(net, choose_start(os.path.join(out_dir, "checkpoint")).path)
    net.set_train(False)
    return net


def score(net, masked, data, bytes_per_token):
    """(bpb over in-document labels, tokens; bpb over every label, tokens) on the validation split."""
    inside = [0.0, 0]
    every = [0.0, 0]
    for ids, ends in build_dataset(data, TINY["batch_size"], split="validation", shuffle=False,
                                   documents=True).create_tuple_iterator(num_epochs=1, output_numpy=True):
        tokens, labels = ids[:, :-1], ids[:, 1:]
        out = net(ms.Tensor(tokens), actual_seq_len=ms.Tensor(ends)) if masked else net(ms.Tensor(tokens))
        logits = out[0].asnumpy().astype(np.float64)                       # [B, S, V]
        m = logits.max(-1, keepdims=True)
        lse = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
        nll = lse - np.take_along_axis(logits, labels[..., None], -1)[..., 0]
        keep = ~crossing_labels(ends, tokens, [TINY["eos_token_id"]])
        inside[0] += float((nll * keep).sum())
        inside[1] += int(keep.sum())
        every[0] += float(nll.sum())
        every[1] += nll.size
    bpb = lambda t: t[0] / math.log(2) / (t[1] * bytes_per_token)          # noqa: E731
    return {"bpb_in_document_labels": bpb(inside), "tokens_in_document": inside[1],
            "bpb_every_label": bpb(every), "tokens_every": every[1]}


def trained_step(out_dir):
    """The step of the newest good checkpoint of a run (0 when it has none)."""
    from bitcpm_ms.app.resume import choose_start
    try:
        return int(choose_start(os.path.join(out_dir, "checkpoint")).step or 0)
    except Exception:           # no checkpoint directory yet, or none that verifies
        return 0


def bpb(data, seeds, steps, work, reuse=False):
    man = read_manifest_file(data)
    bpt = man["splits"]["validation"]["bytes_per_token"]
    rows, load_before = [], os.getloadavg()
    for seed in seeds:
        for masked in (False, True):
            out = os.path.join(work, f"{'masked' if masked else 'plain'}_seed{seed}")
            secs = None
            if not (reuse and trained_step(out) == steps):
                secs = round(train(out, seed, masked, steps, work), 1)
            res = score(load_trained(out, masked), masked, data, bpt)
            row = dict(res, seed=seed, masked=masked, train_seconds=secs)
            if not masked:      # the unmasked model reading one document at a time, as at inference
                alone = score(load_trained(out, True), True, data, bpt)
                row["bpb_in_document_labels_read_alone"] = alone["bpb_in_document_labels"]
            rows.append(row)
            print(f"seed {seed} {'masked' if masked else 'plain '}: bpb (in-document labels) "
                  f"{res['bpb_in_document_labels']:.4f}, every label {res['bpb_every_label']:.4f}"
                  + (f", read alone {row['bpb_in_document_labels_read_alone']:.4f}" if not masked else ""), flush=True)
    pick = lambda masked: [r["bpb_in_document_labels"] for r in rows if r["masked"] == masked]   # noqa: E731
    diffs = [b - a for a, b in zip(pick(False), pick(True))]
    alone = [r["bpb_in_document_labels_read_alone"] for r in rows if not r["masked"]]
    return {"train_steps": steps, "tokens_per_step": TINY["batch_size"] * TINY["seq_length"], "seeds": seeds,
            "runs": rows, "mean_bpb_plain": float(np.mean(pick(False))), "mean_bpb_masked": float(np.mean(pick(True))),
            "mean_bpb_plain_read_alone": float(np.mean(alone)), "masked_minus_plain_per_seed": diffs,
            "masked_minus_plain_read_alone_per_seed": [b - a for a, b in zip(alone, pick(True))],
            "load_before": load_before, "load_after": os.getloadavg()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["speed", "bpb", "both"], default="both")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--train_steps", type=int, default=300)
    p.add_argument("--seeds", default="1234,4321", help="seed and train_dataset.seed of each pair of runs")
    p.add_argument("--work", default=os.path.join(REPO, "output", "doc_masking"))
    p.add_argument("--reuse", action="store_true", help="score runs under --work that reached --train_steps "
                                                         "instead of training them again")
    p.add_argument("--json", default=os.path.join(REPO, "benchmarks", "results", "doc_masking.json"))
    args = p.parse_args()
    data = dataset_dir()
    doc = {"threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}, "dataset": data}
    if args.part in ("speed", "both"):
        doc["speed"] = s = speed(data, args.steps, args.rounds)
        print(f"speed: plain {s['plain']['median_step_s'] * 1e3:.0f} ms, masked {s['masked']['median_step_s'] * 1e3:.0f}"
              f" ms per step: cost {s['cost_pct']:+.1f}% (q1..q3 {s['cost_pct_at_q1_q3'][0]:+.1f}.."
              f"{s['cost_pct_at_q1_q3'][1]:+.1f}%; rounds {min(s['cost_pct_per_round']):+.1f}.."
              f"{max(s['cost_pct_per_round']):+.1f}%), target <= {TARGET_PCT}%: "
              f"{'met' if s['target_met'] else 'missed'}; load {s['load_before'][0]:.1f} -> {s['load_after'][0]:.1f}")
    if args.part in ("bpb", "both"):
        doc["bpb"] = b = bpb(data, [int(x) for x in args.seeds.split(",")], args.train_steps, args.work, args.reuse)
        print(f"bpb on in-document labels: plain {b['mean_bpb_plain']:.4f} (read alone "
              f"{b['mean_bpb_plain_read_alone']:.4f}), masked {b['mean_bpb_masked']:.4f} (masked - plain per seed: "
              f"{', '.join(f'{d:+.4f}' for d in b['masked_minus_plain_per_seed'])})")
    write_results(doc, args.json)


if __name__ == "__main__":
    main()
