#!/usr/bin/env python3
"""The README's targets table, rendered from the benchmarks' JSON instead of typed.

    python3 -m benchmarks.targets [--results benchmarks/results] [--write docs/targets.md]

Every benchmark that states a target writes records made by `benchmarks.machine.target` (value,
interval, bar, verdict) under "targets" in its JSON. A JSON written before that existed, or whose
"targets" are in its benchmark's own form (generation_speed's per-round verdicts), is judged by the
benchmark's `targets(doc)` function, and the table says so; a JSON with "targets" in a form no
judge reads (kernel_compare's bars) is listed under the table, not guessed at. Each row carries the CPU and load the JSON recorded, where it recorded them (older JSONs
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
PREFIX_JUDGES = (("generation_speed", "benchmarks.generation_targets"),)     # variants: generation_speed_2t_*.json


def judge_of(name):
    return JUDGES.get(name) or next((m for prefix, m in PREFIX_JUDGES if name.startswith(prefix)), None)


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


def collect(results=RESULTS, unread=None):
    """[(json name, target record, cpu, load, date, how)] over every JSON with targets; the names of
    JSONs whose "targets" no judge reads are appended to `unread` (a list) when given."""
    rows = []
    for name in sorted(os.listdir(results)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(results, name), encoding="utf-8") as f:
            doc = json.load(f)
        recs, how, judge = doc.get("targets"), "written by the benchmark", judge_of(name)
        if not isinstance(recs, list) and judge:
            recs, how = importlib.import_module(judge).targets(doc), f"judged from the stored JSON by {judge}"
        elif recs is not None and not isinstance(recs, list):
            if unread is not None:
                unread.append(name)
            recs = []
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
    ap.add_argument("--write", help="also write the table as a markdown page (the README links docs/targets.md)")
    args = ap.parse_args()
    unread = []
    rows = collect(args.results, unread)
    text = markdown(rows)
    if unread:
        text += "\n\n\"targets\" in a form this table does not read: " + ", ".join(f"`{n}`" for n in unread)
    text += "\n\nIntervals, by benchmark: " + "; ".join(sorted({r["method"] for _, r, *_ in rows})) + "."
    print(text)
    if args.write:
        with open(args.write, "w", encoding="utf-8") as f:
            f.write("# Targets: every stated target, its measurement, interval and verdict\n\n"
                    "Generated by `python3 -m benchmarks.targets --write docs/targets.md` from "
                    "`benchmarks/results/*.json`; do not edit by hand. A verdict is \"met\" or \"missed\" only "
                    "when the whole interval is on one side of the bar (`benchmarks/machine.py`); \"judged later\" "
                    "marks a JSON written before its benchmark recorded verdicts, judged by that benchmark's "
                    "own `targets(doc)`. CPU and load are what the JSON recorded.\n\n" + text + "\n")


if __name__ == "__main__":
    main()
