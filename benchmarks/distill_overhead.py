#!/usr/bin/env python3
"""Distillation overhead: a distillation training step against the plain QAT step of the same student.

    python -m benchmarks.distill_overhead [--steps 3] [--rounds 10] [--teachers 1x,2x] [--forms fused,ops] [--json PATH]

Student: the tiny YAML's model (ternary QAT, g = 64, batch 8 x 256). Teachers (full precision):
"1x" = the student's size, "2x" = about twice its parameters. Two forms of every model:
"fused" = `cpu_fused_ops: True` (what the tiny YAMLs train with: fused CPU kernels, the loss as
FusedDistillLoss) and "ops" = MindSpore's / MindFormers' op chains. For each teacher and form the
benchmark times, interleaved round by round so machine noise hits all alike (median per variant):
  * qat:        the plain QAT training step (BitCPMTrainOneStepCell + AdamW);
  * distill:    the distillation step (BitCPMDistillForCausalLM: student + frozen teacher, T = 2, alpha 0.5);
  * teacher_fwd: the teacher's forward alone (embeddings -> logits, graph mode, no gradient);
  * ce_loss:    the plain step's loss (CrossEntropyLoss, or its fused form) forward + backward on
                logits of the step's shape;
  * distill_loss: the distillation loss (DistillLoss, or FusedDistillLoss) forward + backward on the
                same shape (what the distillation step spends on its loss instead).
Target (issue 9): overhead = distill - qat <= teacher_fwd * 1.10, i.e. (distill - qat) / teacher_fwd
<= 1.10 on median times, with a 95% bootstrap interval over rounds (benchmarks.machine): "met" or
"missed" only when the whole interval is on one side of 1.10, else "not resolved".
"""
import argparse
import json
import os
import statistics
import time

import numpy as np
import mindspore as ms

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")

from mindspore import nn, ops  # noqa: E402
from mindformers.core.optim import AdamW  # noqa: E402

from benchmarks.machine import bootstrap_ci, target, time_calls, write_results  # noqa: E402
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM  # noqa: E402
from bitcpm_ms.models.flops import count_params  # noqa: E402
from bitcpm_ms.training import BitCPMTrainOneStepCell  # noqa: E402
from bitcpm_ms.training.distill import BitCPMDistillForCausalLM  # noqa: E402
from bitcpm_ms.training.kd_loss import distill_loss_cell  # noqa: E402
from bitcpm_ms.fused.cells import FusedCrossEntropyLoss  # noqa: E402
from mindformers.core.loss.loss import CrossEntropyLoss  # noqa: E402

STUDENT = dict(hidden_size=256, num_layers=4, num_heads=4, n_kv_heads=2, intermediate_size=768,
               vocab_size=8192, seq_length=256, batch_size=8, dim_model_base=64)
TEACHERS = {"1x": STUDENT,
            "2x": dict(STUDENT, hidden_size=384, num_layers=5, num_heads=6, intermediate_size=1152)}


def _config(dims, qat, fused=False):
    return BitCPMConfig(**dims, scale_emb=12, scale_depth=1.4, qat_config={"group_size": 64} if qat else None,
                        cpu_fused_ops=fused)


class TeacherForward(nn.Cell):
    """What the distillation step adds in the forward: the teacher's logits, no gradient."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher

    def construct(self, input_ids):
        tokens = input_ids[:, :-1]
        return ops.stop_gradient(self.teacher.lm_head(self.teacher.model(tokens)))


class LossForwardBackward(nn.Cell):
    """d loss / d logits of a loss Cell (the first output when it returns several)."""

    def __init__(self, loss, n_inputs):
        super().__init__()
        self.loss = loss
        self.n_inputs = n_inputs

    def construct(self, s, t, labels, mask):
        if self.n_inputs == 3:
            return ops.grad(self.loss)(s, labels, mask)
        return ops.grad(self.total)(s, t, labels, mask)

    def total(self, s, t, labels, mask):
        return self.loss(s, t, labels, mask)[0]


def _train_step(net):
    net.set_train(True)
    step = BitCPMTrainOneStepCell(net, AdamW(net.trainable_params(), learning_rate=1e-4))
    step.set_train(True)
    return step


def bench(name, tdims, steps, rounds, fused, temperature=2.0, alpha=0.5):
    rng = np.random.default_rng(0)
    ids = ms.Tensor(rng.integers(3, STUDENT["vocab_size"], (STUDENT["batch_size"], STUDENT["seq_length"] + 1)),
                    ms.int32)
    n_tok = STUDENT["batch_size"] * STUDENT["seq_length"]
    logits = ms.Tensor(rng.standard_normal((n_tok, STUDENT["vocab_size"])).astype(np.float32))
    mask = ms.Tensor(np.ones(n_tok, np.float32))
    labels = ms.Tensor(rng.integers(0, STUDENT["vocab_size"], n_tok), ms.int32)
    ms.set_seed(0)
    teacher = BitCPMForCausalLM(_config(tdims, qat=False, fused=fused))
    ce = FusedCrossEntropyLoss(CrossEntropyLoss()) if fused else CrossEntropyLoss()
    variants = {
        "qat": (_train_step(BitCPMForCausalLM(_config(STUDENT, qat=True, fused=fused))), (ids,)),
        "distill": (_train_step(BitCPMDistillForCausalLM(_config(STUDENT, qat=True, fused=fused), teacher, temperature,
                                                         alpha)), (ids,)),
        "teacher_fwd": (TeacherForward(teacher), (ids,)),
        "ce_loss": (LossForwardBackward(ce, 3), (logits, logits * 0.5, labels, mask)),
        "distill_loss": (LossForwardBackward(distill_loss_cell(temperature, alpha, fused), 4),
                         (logits, logits * 0.5, labels, mask)),
    }
    times, compile_s, blocks = {k: [] for k in variants}, {}, []
    for k, (fn, args) in variants.items():
        t0 = time.perf_counter()
        time_calls(fn, args, 2)                                 # compile + warm-up
        compile_s[k] = round(time.perf_counter() - t0, 2)
    for r in range(rounds):
        block = {}
        for k, (fn, args) in variants.items():
            block[k] = time_calls(fn, args, steps)
            times[k] += block[k]
        blocks.append(block)
        print(f"  {name} {'fused' if fused else 'ops'}: round {r + 1}/{rounds} done", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    spread = {k: [round(min(v) * 1e3, 1), round(max(v) * 1e3, 1)] for k, v in times.items()}
    overhead = med["distill"] - med["qat"]

    def over_fwd(x):
        return (statistics.median(x["distill"]) - statistics.median(x["qat"])) / statistics.median(x["teacher_fwd"])
    est, ci = bootstrap_ci(blocks, over_fwd)
    return {"teacher": name, "form": "fused" if fused else "ops", "teacher_params": count_params(_config(tdims, False)).total,
            "student_params": count_params(_config(STUDENT, True)).total, "tokens_per_step": n_tok,
            "median_ms": {k: round(v * 1e3, 1) for k, v in med.items()}, "min_max_ms": spread,
            "samples_each": steps * rounds, "compile_s": compile_s,
            "overhead_ms": round(overhead * 1e3, 1),
            "overhead_over_teacher_fwd": round(est, 3), "overhead_over_teacher_fwd_ci95": [round(x, 3) for x in ci],
            "rounds": blocks, "load_1min_end": os.getloadavg()[0],
            "target": target(f"distillation overhead / teacher forward, teacher {name}, {'fused' if fused else 'ops'}",
                             est, ci, 1.10, higher_is_better=False, unit="x",
                             method="median times, 95% bootstrap over interleaved rounds")}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--teachers", default="1x,2x")
    p.add_argument("--forms", default="fused,ops", help="fused (cpu_fused_ops, the tiny YAMLs' setting), ops, or both")
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "distill_overhead.json"))
    p.add_argument("--merge", action="store_true",
                   help="keep the other teacher/form rows of an existing --json (one process per row: MindSpore "
                        "keeps every compiled graph, ~4 GB per teacher/form pair)")
    args = p.parse_args()
    results = []
    for name in args.teachers.split(","):
        if name not in TEACHERS:
            p.error(f"unknown teacher {name!r}; choose from {sorted(TEACHERS)}")
        for form in args.forms.split(","):
            if form not in ("fused", "ops"):
                p.error(f"unknown form {form!r}; choose fused or ops")
            results.append(bench(name, TEACHERS[name], args.steps, args.rounds, form == "fused"))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "rounds"}), flush=True)
    print(f"\n{'teacher':8s} {'form':6s} {'params':>8s} {'QAT step':>9s} {'distill':>9s} {'overhead':>9s} "
          f"{'teacher fwd':>12s} {'CE f+b':>10s} {'CE+KD f+b':>10s} {'ovh/fwd':>8s}")
    for r in results:
        m = r["median_ms"]
        print(f"{r['teacher']:8s} {r['form']:6s} {r['teacher_params'] / 1e6:7.1f}M {m['qat']:7.0f}ms {m['distill']:7.0f}ms "
              f"{r['overhead_ms']:7.0f}ms {m['teacher_fwd']:10.0f}ms {m['ce_loss']:8.0f}ms {m['distill_loss']:8.0f}ms "
              f"{r['overhead_over_teacher_fwd']:8.2f} ({r['overhead_over_teacher_fwd_ci95'][0]:.2f}-"
              f"{r['overhead_over_teacher_fwd_ci95'][1]:.2f}) <= 1.10: {r['target']['verdict']}")
    if args.merge and os.path.exists(args.json):
        with open(args.json, encoding="utf-8") as f:
            old = json.load(f).get("results", [])
        done = {(r["teacher"], r["form"]) for r in results}
        results = [r for r in old if (r["teacher"], r["form"]) not in done and "target" in r] + results
    write_results({"method": {"steps": args.steps, "rounds": args.rounds}, "student": STUDENT, "results": results,
                   "targets": [r["target"] for r in results]}, args.json)


if __name__ == "__main__":
    main()
