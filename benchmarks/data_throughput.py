#!/usr/bin/env python3
"""Data-preparation throughput and peak memory on the default corpus (GCIDE).

Runs ``prepare_dataset`` in a fresh subprocess per configuration and polls /proc every 50 ms
for the summed RSS of that process and all its descendants (the tokenizer workers); also
reports ``resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`` (the largest single process seen).

Configurations:
  full-1w / full-2w : train the tokenizer + pack the whole corpus, 1 or 2 worker processes
  pack-1x / pack-3x : pack only (tokenizer given), corpus once and three times over
                      (three links to the same dictionary) -> memory must not grow with size

Prints a table and writes benchmarks/results/data_throughput.json. Other jobs on the machine
slow it down: the 1-minute load average before and after each run is recorded.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys
from bitcpm_ms.data import PrepareConfig, prepare_dataset
cfg = PrepareConfig(**json.loads({cfg!r}))
m = prepare_dataset(cfg, log=lambda s: None)
print(json.dumps({{"timing": m["timing"], "raw_bytes": m["reading"]["raw_text_bytes"],
                  "tokens": sum(s["tokens"] for s in m["splits"].values()),
                  "samples": {{k: v["samples"] for k, v in m["splits"].items()}}}}))
"""


def _descendants(pid):
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def _rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_config(name, cfg):
    load0 = os.getloadavg()[0]
    t0 = time.time()
    proc = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=REPO, cfg=json.dumps(cfg))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_sum = peak_procs = 0
    while proc.poll() is None:
        pids = _descendants(proc.pid)
        peak_sum = max(peak_sum, sum(_rss_kb(p) for p in pids))
        peak_procs = max(peak_procs, len(pids))
        time.sleep(0.05)
    out, err = proc.communicate()
    wall = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    t = res["timing"]
    return {
        "name": name, "num_workers": cfg["num_workers"], "trained_tokenizer": not cfg.get("tokenizer_model"),
        "corpus_mb": round(res["raw_bytes"] / 1e6, 1), "tokens": res["tokens"],
        "wall_s_incl_startup": round(wall, 2), "tokenizer_s": t["tokenizer_seconds"],
        "packing_s": t["packing_seconds"], "total_s": t["total_seconds"],
        "packing_mb_per_s": t["mb_per_s"], "packing_tokens_per_s": t["tokens_per_s"],
        "peak_rss_sum_mb": round(peak_sum / 1024, 1), "max_processes": peak_procs,
        "loadavg_before": round(load0, 2), "loadavg_after": round(os.getloadavg()[0], 2),
    }


def targets(doc) -> list:
    """Whole-corpus preparation in < 3 minutes: the slowest full-corpus run (start-up included) is the value."""
    from benchmarks.machine import target
    full = [r["wall_s_incl_startup"] for r in doc["runs"] if r["name"].startswith("full")]
    if not full:
        return []
    return [target("whole GCIDE corpus prepared (tokenizer + packing), seconds", max(full), [min(full), max(full)],
                   180.0, higher_is_better=False, unit=" s", method=f"range over {len(full)} full-corpus runs")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--vocab_size", type=int, default=8192)
    ap.add_argument("--seq_length", type=int, default=256)
    ap.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "data_throughput.json"))
    ap.add_argument("--quick", action="store_true", help="only full-2w and pack-1x")
    args = ap.parse_args()
    from bitcpm_ms.data.gcide import gcide_path
    src = gcide_path()
    idx = src[: -len(".dict.dz")] + ".index"
    tmp = tempfile.mkdtemp(prefix="bitcpm_bench_")
    rows = []
    try:
        triple = os.path.join(tmp, "triple")
        os.makedirs(triple)
        for i in range(3):
            os.symlink(src, os.path.join(triple, f"gcide{i}.dict.dz"))
            os.symlink(idx, os.path.join(triple, f"gcide{i}.index"))
        base = dict(vocab_size=args.vocab_size, seq_length=args.seq_length, progress=False)
        tok_dir = os.path.join(tmp, "full-2w")
        plan = [("full-2w", dict(base, input="gcide", num_workers=2, output_dir=tok_dir))]
        if not args.quick:
            plan.append(("full-1w", dict(base, input="gcide", num_workers=1,
                                         output_dir=os.path.join(tmp, "full-1w"))))
        tokm = os.path.join(tok_dir, "tokenizer.model")
        plan.append(("pack-1x", dict(base, input="gcide", num_workers=2, tokenizer_model=tokm,
                                     output_dir=os.path.join(tmp, "pack-1x"))))
        if not args.quick:
            plan.append(("pack-3x", dict(base, input=triple, num_workers=2, tokenizer_model=tokm,
                                         output_dir=os.path.join(tmp, "pack-3x"))))
        for name, cfg in plan:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows.append(run_config(name, cfg))
            if name not in ("full-2w",):
                shutil.rmtree(cfg["output_dir"], ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    hdr = ("config", "workers", "corpus MB", "tokens", "tok s", "pack s", "total s", "MB/s", "Mtok/s",
           "peak RSS MB", "load")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        print(f"| {r['name']} | {r['num_workers']} | {r['corpus_mb']} | {r['tokens']:,} | {r['tokenizer_s']:.1f} | "
              f"{r['packing_s']:.1f} | {r['total_s']:.1f} | {r['packing_mb_per_s']:.2f} | "
              f"{r['packing_tokens_per_s'] / 1e6:.2f} | {r['peak_rss_sum_mb']:.0f} | "
              f"{r['loadavg_before']:.1f}->{r['loadavg_after']:.1f} |")
    result = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
              "vocab_size": args.vocab_size, "seq_length": args.seq_length, "runs": rows,
              "rusage_children_maxrss_mb": round(ru.ru_maxrss / 1024, 1),
              "note": "MB = 1e6 bytes of decompressed raw corpus; peak RSS = max over time of the summed "
                      "RSS of the prepare process and its workers (polled every 50 ms)"}
    result["targets"] = targets(result)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.out}; largest single process (RUSAGE_CHILDREN maxrss): {result['rusage_children_maxrss_mb']} MB")


if __name__ == "__main__":
    main()
