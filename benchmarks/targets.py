#!/usr/bin/env python3
"""The README's targets table, rendered from the benchmarks' JSON instead of typed.

    python3 -m benchmarks.targets [--results benchmarks/results] [--markdown]

Every benchmark that states a target writes records made by `benchmarks.machine.target` (value,
interval, bar, verdict) under "targets" in its JSON. A JSON written before that existed is judged by
its benchmark's own `targets(doc)` function (the same code that now runs on write), and the table
says so. Each row carries the CPU and load the JSON recorded, where it recorded them (older JSONs
did not; the row says "not recorded").
"""
import argparse
import datetime
import importlib
import json
import os

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# JSON file -> the module whose targets(doc) judges it when the JSON has no "targets" of its own
JUDGES = {"ternary_matmul.json": "benchmarks.ternary_matmul", "convert_memory.json": "benchmarks.convert_memory",
          "data_throughput.json": "benchmarks.data_throughput", "dp_scaling.json": "benchmarks.dp_scaling",
          "generation_speed.json": "benchmarks.generation_targets"}


def _machine(doc):
    """(CPU with its widest SIMD, 1-minute load, time) as the JSON recorded them; older JSONs used
    other keys (cpu at the top, avx512_vnni, load_avg_at_end) or nothing."""
    m = doc.get("machine") or {}
    cpu = m.get("cpu") or doc.get("cpu") or "CPU not recorded"
    simd = m.get("simd")
    if simd:
        cpu += " (" + ("AVX-512 VNNI" if "avx512_vnni" in simd else "AVX-512" if "avx512f" in simd else
                       "AVX2" if "avx2" in simd else "no AVX2") + ")"
    elif "avx512_vnni" in m:
        cpu += " (AVX-512 VNNI)" if m["avx512_vnni"] else " (no AVX-512 VNNI)"
    elif cpu != "CPU not recorded":
        cpu += " (ISA not recorded)"
    load = m.get("load") or m.get("load_avg_at_end")
    return cpu, f"{load[0]:.1f}" if load else "not recorded", doc.get("time")


def collect(results=RESULTS):
    """[(json name, target record, cpu, load, date, how)] over every JSON with targets."""
    rows = []
    for name in sorted(os.listdir(results)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(results, name), encoding="utf-8") as f:
            doc = json.load(f)
        recs, how = doc.get("targets"), "written by the benchmark"
        if recs is None and name in JUDGES:
            recs, how = importlib.import_module(JUDGES[name]).targets(doc), f"judged from the stored JSON by {JUDGES[name]}"
        cpu, load, t = _machine(doc)
        date = datetime.date.fromtimestamp(t).isoformat() if t else "-"
        rows += [(name, r, cpu, load, date, how) for r in recs or []]
    return rows


def _num(x, unit):
    return f"{x:,.3g}{unit}" if abs(x) < 1000 else f"{x:,.0f}{unit}"


def markdown(rows):
    lines = ["| target | measured | interval | bar | verdict | CPU | load (1 min) | JSON |", "|---|---|---|---|---|---|---|---|"]
    for name, r, cpu, load, date, how in rows:
        lo, hi = r["interval"]
        interval = "-" if lo == hi else f"{_num(lo, r['unit'])} to {_num(hi, r['unit'])}"
        note = "" if how.startswith("written") else " (judged later)"
        lines.append(f"| {r['target']} | {_num(r['value'], r['unit'])} | {interval} | {r['direction']} "
                     f"{_num(r['bar'], r['unit'])} | **{r['verdict']}** | {cpu} | {load} | `{name}`{note} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=RESULTS)
    args = ap.parse_args()
    rows = collect(args.results)
    print(markdown(rows))
    print("\nintervals: " + "; ".join(sorted({f"{r['method']}" for _, r, *_ in rows})))


if __name__ == "__main__":
    main()
