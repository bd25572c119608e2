#!/usr/bin/env python3
"""Where one CPU training step's time goes: MindSpore's profiler per op, grouped by model part and
by phase, for the tiny and ~30M shapes with the fused CPU ops on and off; plus the host side of the
Trainer path (data pipeline, callbacks). Prints tables, writes JSON.

    python -m benchmarks.train_profile [--configs tiny,30m] [--fused on,off] [--precision qat|fp]
        [--steps 3] [--no-host] [--json PATH]

Op profile: the training step as the Trainer runs it (BitCPMForCausalLM with MiniCPM scalings,
our train-step wrapper with global-norm clipping, the YAML's optimizer: CpuFusedAdamW with the
fused ops, MindFormers' AdamW without), fixed batch, 2 warm-up steps, then `--steps` profiled
steps. Ops are attributed by MindSpore's scope names, phases by execution order. Caveat: without
the fused ops, MindSpore scopes every backward MatMul under the first Linear's bprop graph, so
they appear as one row.
Host side (tiny YAML): the MindRecord -> batch pipeline the Trainer builds, iterated alone; and
each callback's per-step time in a short Trainer run (callback methods timed in place).
"""
import argparse
import collections
import csv
import glob
import json
import os
import sys
import tempfile
import time

from benchmarks import bench_models as B

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "train_profile.json")

# (component, test on the scope name), first match wins
RULES = [
    ("optimizer (AdamW update)", lambda n, t: "/optimizer-" in n),
    ("QAT weight fake-quant", lambda n, t: "weight_quantizer" in n),
    ("lm_head matmul", lambda n, t: "lm_head" in n and "Grad_MatMul" not in n),
    ("backward matmuls (all linears, unattributed)", lambda n, t: "Grad_MatMul" in n),
    ("cross-entropy", lambda n, t: "loss-" in n),
    ("RMSNorm", lambda n, t: "RMSNorm" in n),
    ("embedding", lambda n, t: "Embedding" in n),
    ("MiniCPM scaling cells", lambda n, t: "ScaleOutput" in n or "ScaledResidualAdd" in n),
    ("linears q,k,v,o,gate,up,down", lambda n, t: any(f"/{w}-" in n for w in
                                                      ("wq", "wk", "wv", "wo", "w1", "w2", "w3"))),
    ("attention (RoPE, scores, mask, softmax, values)", lambda n, t: "attention-" in n),
    ("SwiGLU (silu * up)", lambda n, t: "feed_forward-" in n),
    ("mask and RoPE tables", lambda n, t: "casual_mask" in n or "freqs_mgr" in n),
    ("residual adds", lambda n, t: "DecodeLayer/Add" in n),
]


def is_wrapper(name):
    return not name.startswith(("Default/network-", "Gradients/", "Expand/")) and "/optimizer-" not in name


def component_of(name, op_type):
    if is_wrapper(name):
        return "train-step wrapper (grad norm, clip, skip, copies)"
    return next((c for c, test in RULES if test(name, op_type)), "other")


def parse_profile(out_dir, steps):
    """Per-execution records (cpu_op_execute_timestamp_0.txt: name;type;start_ns,duration_ms,..),
    in time order. Phase: backward from the step's first op scoped "Gradients/" (autodiff of the
    loss reduction, which precedes every backward kernel, including the fused ops' Cell bprops that
    keep their forward scope) until the wrapper or optimizer runs."""
    files = glob.glob(os.path.join(out_dir, "*", "FRAMEWORK", "cpu_op_execute_timestamp_0.txt"))
    if not files:
        raise SystemExit(f"no profiler output under {out_dir}")
    execs = []
    for line in open(files[0], encoding="utf-8"):
        parts = line.strip().split(";")
        if len(parts) >= 3:
            start, dur = parts[2].split(",")[:2]
            execs.append((int(start), float(dur), parts[0], parts[0].rsplit("/", 1)[-1].split("-op")[0]))
    comp, phase, types = collections.Counter(), collections.Counter(), collections.Counter()
    backward = False
    for _, dur, name, op_type in sorted(execs):
        if "/optimizer-" in name:
            ph, backward = "optimizer", False
        elif is_wrapper(name):
            ph, backward = "wrapper", False
        else:
            backward = backward or name.startswith(("Gradients/", "Expand/"))
            ph = "backward" if backward else "forward"
        ms_per_step = dur / steps
        comp[component_of(name, op_type)] += ms_per_step
        phase[ph] += ms_per_step
        types[f"{ph} {op_type}"] += ms_per_step
    return comp, phase, types


def profile_step(name, fused, precision, steps, workdir):
    from mindspore import Profiler
    dims = B.CONFIGS[name]
    net = B.ms_network(dims, 64 if precision == "qat" else None, fused)
    run = B.ms_runner(B.ms_step(net, "ours", fused_optimizer=fused), B.random_batch(dims))
    run()
    run()
    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    out = os.path.join(workdir, f"prof_{name}_{int(fused)}")
    prof = Profiler(output_path=out)
    for _ in range(steps):
        run()
    prof.analyse()
    comp, phase, types = parse_profile(out, steps)
    total = sum(comp.values())
    del net, run
    return {"config": name, "fused": fused, "precision": precision, "unprofiled_step_s": wall,
            "op_ms_per_step": total, "components_ms": dict(comp.most_common()), "phases_ms": dict(phase.most_common()),
            "top_op_types_ms": dict(types.most_common(15))}


def host_side(workdir, batches=40):
    """Data pipeline alone and per-callback time in a short Trainer run (tiny YAML)."""
    from mindformers.core.context import build_context
    from mindformers.dataset import build_dataset
    from mindspore.train.callback import Callback

    from bitcpm_ms import training  # noqa: F401  (registers wrapper, callbacks, optimizer)
    from bitcpm_ms.app.config import load_config
    from bitcpm_ms.app.train import train
    from bitcpm_ms.testing import TINY_YAML, make_mindrecord

    dims, steps = B.CONFIGS["tiny"], 30
    data_dir = make_mindrecord(os.path.join(workdir, "data", "train.mindrecord"), dims["batch_size"] * (batches + 4),
                               dims["seq_length"], dims["vocab_size"])
    config = load_config(TINY_YAML, {"output_dir": os.path.join(workdir, "out"), "eval_after_train": False,
                                     "train_dataset.data_loader.dataset_dir": data_dir,
                                     "runner_config.stop_step": steps})
    config.pop("data", None)
    config.output_dir = os.path.abspath(config.output_dir)
    os.makedirs(config.output_dir, exist_ok=True)
    build_context(config)
    dataset = build_dataset(config.train_dataset_task)
    it = dataset.create_tuple_iterator(num_epochs=1)
    next(it)
    t0 = time.perf_counter()
    n = sum(1 for _, _ in zip(range(batches), it))
    data_ms = (time.perf_counter() - t0) / n * 1e3
    timings = collections.defaultdict(list)
    originals = {}
    for cls in Callback.__subclasses__() + [c for s in Callback.__subclasses__() for c in s.__subclasses__()]:
        for meth in ("on_train_step_begin", "on_train_step_end", "step_begin", "step_end"):
            fn = cls.__dict__.get(meth)
            if fn is None or (cls, meth) in originals:
                continue
            originals[(cls, meth)] = fn

            def timed(self, run_context, _fn=fn, _key=f"{cls.__name__}.{meth}"):
                t = time.perf_counter()
                result = _fn(self, run_context)
                timings[_key].append(time.perf_counter() - t)
                return result
            setattr(cls, meth, timed)
    try:
        train(config)
    finally:
        for (cls, meth), fn in originals.items():
            setattr(cls, meth, fn)
    per_cb = {k: 1e3 * sorted(v)[len(v) // 2] for k, v in timings.items() if len(v) >= steps // 2}
    return {"data_pipeline_ms_per_batch": data_ms, "callback_ms_per_step_median": per_cb,
            "note": "CPU graph mode runs a step synchronously (the call returns when it is done), so reading "
                    "the loss in a callback adds no device sync"}


def print_report(rows, host):
    for r in rows:
        total = r["op_ms_per_step"]
        print(f"\n{r['config']} ({r['precision']}, fused ops {'on' if r['fused'] else 'off'}): op time "
              f"{total:.0f} ms/step; unprofiled step {1e3 * r['unprofiled_step_s']:.0f} ms")
        for k, v in r["components_ms"].items():
            print(f"  {k:52s} {v:8.1f} ms {100 * v / total:5.1f}%")
        print("  by phase: " + ", ".join(f"{k} {v:.0f} ms" for k, v in r["phases_ms"].items()))
        print("  top op types: " + ", ".join(f"{k} {v:.0f}" for k, v in list(r["top_op_types_ms"].items())[:8]))
    if host:
        print(f"\nhost side (tiny YAML): data pipeline {host['data_pipeline_ms_per_batch']:.2f} ms/batch")
        for k, v in sorted(host["callback_ms_per_step_median"].items()):
            print(f"  callback {k:44s} {v:8.3f} ms/step (median)")
        print(f"  {host['note']}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="tiny,30m")
    p.add_argument("--fused", default="on,off")
    p.add_argument("--precision", default="qat", choices=("qat", "fp"))
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--no-host", action="store_true")
    p.add_argument("--json", default=RESULTS)
    args = p.parse_args()
    from bitcpm_ms.app.console import import_mindformers
    import_mindformers(log_dir=os.path.join(tempfile.gettempdir(), "bitcpm_bench_log"))
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    rows, host = [], None
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.configs.split(","):
            for f in args.fused.split(","):
                rows.append(profile_step(name, f == "on", args.precision, args.steps, workdir))
                print(json.dumps(rows[-1]), flush=True)
        if not args.no_host:
            host = host_side(workdir)
    print_report(rows, host)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as fh:
        json.dump({"device": "CPU", "cores": os.cpu_count(), "load_avg": os.getloadavg(), "profiles": rows,
                   "host": host}, fh, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
