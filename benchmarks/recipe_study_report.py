"""Analysis of benchmarks/recipe_study.py: per-variant means over seeds, the seed noise, the orderings
of the report's Tables 1, 5, 6, 7 checked against ours, the ternary-to-FP gap, a loss-curve figure,
a markdown table, and the generated section of docs/recipe.md. Everything is recomputed from the
per-run JSON files, so `recipe_study.py --report` rebuilds it without training.

Rule for "agrees": the report says variant a is better than b; with per-run seed noise sigma (pooled
standard deviation of the same variant over seeds) and k_a, k_b seeds, a pair is resolved when
|mean_a - mean_b| > 2 sigma sqrt(1/k_a + 1/k_b); it agrees when resolved with a better, is reversed
when resolved with b better, and is a tie otherwise. With one seed the noise is unknown and only the
plain order is given.
"""
import json
import math
import os
import statistics

from bitcpm_ms.fileio import atomic_json, atomic_write

BEGIN, END = "<!-- recipe-study:begin -->", "<!-- recipe-study:end -->"

# variant -> (label, report table)
VARIANTS = {
    "fp": ("full precision (the init and teacher)", "gap"), "fp_cont": ("full precision, continued N steps", "gap"),
    "scratch": ("ternary from scratch (fewer tokens than qat: no FP pretraining)", "init"), "qat": ("ternary from FP (g 64, LR 1e-2): reference", "all"),
    "qat_more": ("pure QAT: qat + M steps", "5"), "kd2": ("two-stage: qat + M steps distilling", "5"),
    "kd1": ("distillation during QAT (N + M steps)", "5"),
    "g-1": ("group size per channel", "7"), "g256": ("group size 256", "7"), "g128": ("group size 128", "7"),
    "g32": ("group size 32", "7"), "five": ("5-value", "1"), "intsym4": ("int-sym-4", "1"),
    "halfsym4": ("half-sym-4", "1"), "asym4": ("asym-4", "1"), "lr5e-3": ("LR 5e-3", "6"), "lr1.5e-2": ("LR 1.5e-2", "6"),
}
# the report's orderings, best first, as pairs (a better than b); "qat" is ternary / g 64 / LR 1e-2
CLAIMS = {
    "Table 1 (quantization spaces)": ("5-value > ternary > int-sym-4 ~ half-sym-4 > asym-4",
                                      [("five", "qat"), ("qat", "intsym4"), ("qat", "halfsym4"),
                                       ("intsym4", "asym4"), ("halfsym4", "asym4")]),
    "Table 5 (distillation)": ("two-stage > distillation during QAT > pure QAT",
                               [("kd2", "kd1"), ("kd1", "qat_more"), ("kd2", "qat_more")]),
    "Table 6 (QAT learning rate)": ("1e-2 best; 5e-3 worse; 1.5e-2 worse (fails to recover in the decay)",
                                    [("qat", "lr5e-3"), ("qat", "lr1.5e-2")]),
    "Table 7 (group size)": ("g 32 < g 64 < per channel in loss", [("g32", "qat"), ("qat", "g-1")]),
}
SHORT = {"qat": "ternary/g64/LR1e-2", "five": "5-value", "intsym4": "int-sym-4", "halfsym4": "half-sym-4",
         "asym4": "asym-4", "kd2": "two-stage", "kd1": "during-QAT", "qat_more": "pure QAT", "g32": "g32",
         "g-1": "per-channel", "lr5e-3": "LR 5e-3", "lr1.5e-2": "LR 1.5e-2"}


def load_run(results_dir: str, name: str):
    path = os.path.join(results_dir, f"{name}.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _variant(run: str) -> str:
    base, _, seed = run.rpartition("_s")
    return base if base and seed.isdigit() else run


def _final_train_loss(run: dict):
    vals = [c[1] for c in run["curve"][-3:] if c[1] is not None]
    return statistics.mean(vals) if vals else None


def total_tokens(run: dict, by_name: dict) -> int:
    """Tokens since random init: the run's own plus those of the chain of runs it starts from."""
    n, init = run["tokens"], run.get("init_from")
    while init:
        n += by_name[init]["tokens"]
        init = by_name[init].get("init_from")
    return n


def tokens_label(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def aggregate(runs: list) -> dict:
    """variant -> {bpb, ppl, train_loss (means), bpb_seeds, n, tokens, total_tokens (since random init)}."""
    by_name = {r["run"]: r for r in runs}
    groups = {}
    for r in runs:
        groups.setdefault(_variant(r["run"]), []).append(r)
    out = {}
    for v, rs in groups.items():
        bpb = [r["eval"]["bits_per_byte"] for r in rs]
        tl = [x for x in (_final_train_loss(r) for r in rs) if x is not None]
        out[v] = {"bpb": statistics.mean(bpb), "bpb_seeds": bpb, "n": len(rs),
                  "ppl": statistics.mean(r["eval"]["perplexity"] for r in rs),
                  "train_loss": statistics.mean(tl) if tl else None, "tokens": rs[0]["tokens"],
                  "steps": rs[0]["steps"], "total_tokens": total_tokens(rs[0], by_name)}
    return out


def seed_noise(agg: dict):
    """Pooled standard deviation of one run's bits/byte over seeds (None with one seed)."""
    variances = [statistics.variance(a["bpb_seeds"]) for a in agg.values() if a["n"] >= 2]
    return math.sqrt(statistics.mean(variances)) if variances else None


def judge(agg: dict, sigma, pairs) -> list:
    out = []
    for a, b in pairs:
        if a not in agg or b not in agg:
            out.append({"pair": (a, b), "verdict": "missing"})
            continue
        d = agg[b]["bpb"] - agg[a]["bpb"]           # > 0: a is better (lower bits/byte)
        if sigma is None:
            verdict = "agrees (1 seed)" if d > 0 else "reversed (1 seed)"
            thr = None
        else:
            thr = 2 * sigma * math.sqrt(1 / agg[a]["n"] + 1 / agg[b]["n"])
            verdict = "agrees" if d > thr else ("reversed" if d < -thr else "tie (within seed noise)")
        out.append({"pair": (a, b), "delta_bpb": d, "threshold": thr, "verdict": verdict})
    return out


def overall(verdicts: list) -> str:
    v = [x["verdict"] for x in verdicts if x["verdict"] != "missing"]
    if not v:
        return "not run"
    if any(x.startswith("reversed") for x in v):
        return "disagrees" if not any(x.startswith("agrees") for x in v) else "partly disagrees"
    if all(x.startswith("agrees") for x in v):
        return "agrees"
    return "agrees where resolved; the rest are ties within seed noise" if any(x.startswith("agrees") for x in v) \
        else "not resolved (ties within seed noise)"


def gap(agg: dict) -> dict:
    out = {}
    for ref in ("fp", "fp_cont"):
        if "qat" in agg and ref in agg:
            d = agg["qat"]["bpb"] - agg[ref]["bpb"]
            out[ref] = {"delta_bpb": d, "relative_pct": 100 * d / agg[ref]["bpb"]}
    return out


def markdown(agg: dict, sigma, claims: dict, gaps: dict, quick: bool) -> str:
    lines = []
    if quick:
        lines.append("**Quick run (`--quick`): a pipeline check on a 1-layer model with short runs and one seed, "
                     "not a result.**\n")
    ref = agg.get("qat", {}).get("bpb")
    lines += ["| run | table | steps | tokens | tokens since random init | held-out bits/byte | vs reference | perplexity "
              "| final train loss | seeds |", "|---|---|---|---|---|---|---|---|---|---|"]
    for v, (label, table) in VARIANTS.items():
        if v not in agg:
            continue
        a = agg[v]
        spread = f" ({min(a['bpb_seeds']):.4f}-{max(a['bpb_seeds']):.4f})" if a["n"] > 1 else ""
        rel = f"{a['bpb'] - ref:+.4f}" if ref is not None and v != "qat" else "-"
        tl = f"{a['train_loss']:.3f}" if a["train_loss"] is not None else "-"
        lines.append(f"| {label} | {table} | {a['steps']} | {a['tokens'] / 1e3:.0f}K | {tokens_label(a['total_tokens'])} "
                     f"| {a['bpb']:.4f}{spread} | {rel} "
                     f"| {a['ppl']:.1f} | {tl} | {a['n']} |")
    lines.append("")
    lines.append("Seed noise (pooled standard deviation of one run's bits/byte over seeds): "
                 + (f"{sigma:.4f}" if sigma is not None else "unknown (one seed)") + ".\n")
    for title, c in claims.items():
        def name(v):
            return f"{SHORT.get(v, v)} ({tokens_label(agg[v]['total_tokens'])})" if v in agg else SHORT.get(v, v)
        lines.append(f"- **{title}**: report: {c['report']}. Ours: **{c['overall']}**. " + "; ".join(
            f"{name(x['pair'][0])} vs {name(x['pair'][1])}: "
            + (f"{x['delta_bpb']:+.4f} bpb, {x['verdict']}" if "delta_bpb" in x else "missing")
            for x in c["pairs"]) + ".")
    for ref, g in gaps.items():
        what = "the full-precision checkpoint it starts from" if ref == "fp" else \
            "fp_cont, the full-precision model trained as many tokens at the untuned LR 3e-3 (one run; the LR-swept " \
            "FP twin is in the next section)"
        toks = f"{tokens_label(agg['qat']['total_tokens'])} vs {tokens_label(agg[ref]['total_tokens'])} tokens"
        lines.append(f"- **Ternary-to-FP gap** (ternary from FP, g 64, vs {what}; {toks}): {g['delta_bpb']:+.4f} "
                     f"bits/byte ({g['relative_pct']:+.1f}%).")
    if "g256" in agg and "qat" in agg:
        a, b = agg["g256"], agg["qat"]
        tl = (f"final training loss {a['train_loss'] - b['train_loss']:+.4f} nats, "
              if a["train_loss"] is not None and b["train_loss"] is not None else "")
        lines.append(f"- **g 256 vs g 64** (issue 10, llama.cpp TQ2_0 blocks): {tl}held-out "
                     f"{a['bpb'] - b['bpb']:+.4f} bits/byte.")
    return "\n".join(lines) + "\n"


def figure(runs: list, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    by = {r["run"]: r for r in runs}
    seed1 = {_variant(n): r for n, r in by.items() if n.endswith("_s1") or _variant(n) == n}
    panels = [("Full precision", ["fp", "fp_cont"]), ("Init (report 5.1)", ["scratch", "qat"]),
              ("Table 5: distillation", ["qat_more", "kd2", "kd1"]),
              ("Table 7: group size", ["g-1", "g256", "g128", "qat", "g32"]),
              ("Table 1: quantization space", ["qat", "five", "intsym4", "halfsym4", "asym4"]),
              ("Table 6: QAT LR", ["lr5e-3", "qat", "lr1.5e-2"])]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (title, names) in zip(axes.flat, panels):
        for v in names:
            r = seed1.get(v)
            if r is None:
                continue
            offset = seed1["qat"]["steps"] if v in ("qat_more", "kd2") and "qat" in seed1 else 0
            if v == "fp_cont" and "fp" in seed1:
                offset = seed1["fp"]["steps"]
            per_step = r["tokens"] / r["steps"]
            xs = [(c[0] + offset) * per_step / 1e6 for c in r["curve"] if c[1] is not None]
            ys = [c[1] for c in r["curve"] if c[1] is not None]
            ax.plot(xs, ys, label=f"{SHORT.get(v, v)} ({r['eval']['bits_per_byte']:.3f} bpb)", lw=1.2)
        ax.set_title(title)
        ax.set_xlabel("tokens since the fp checkpoint (M)" if title != "Full precision" else "tokens (M)")
        ax.set_ylabel("training cross-entropy (nats)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("BitCPM-CANN recipe on GCIDE, tiny model (seed 1; held-out bits/byte in the legend)")
    fig.tight_layout()
    fig.savefig(path + f".tmp-{os.getpid()}.png", dpi=110)
    os.replace(path + f".tmp-{os.getpid()}.png", path)
    plt.close(fig)


def update_docs(path: str, section: str, begin: str = BEGIN, end: str = END) -> None:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if begin not in text or end not in text:
        raise SystemExit(f"{path} has no {begin} ... {end} section to regenerate")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(head + begin + "\n" + section + end + tail)


def build_report(recipe, runs_dir: str, results: str, tag: str, docs_path, quick: bool) -> str:
    runs = [r for r in (load_run(runs_dir, st.name) for st in recipe.stages) if r]
    if not runs:
        return "no finished runs yet"
    agg = aggregate(runs)
    sigma = seed_noise(agg)
    claims = {}
    for title, (text, pairs) in CLAIMS.items():
        verdicts = judge(agg, sigma, pairs)
        claims[title] = {"report": text, "pairs": verdicts, "overall": overall(verdicts)}
    gaps = gap(agg)
    md = markdown(agg, sigma, claims, gaps, quick)
    png = os.path.join(results, f"{tag}_curves.png")
    figure(runs, png)
    summary = {"runs_done": len(runs), "runs_planned": len(recipe.stages), "seed_noise_bpb": sigma,
               "variants": agg, "claims": claims, "gap": gaps, "figure": os.path.relpath(png, os.getcwd()),
               "quick": quick}
    atomic_json(summary, os.path.join(results, f"{tag}.json"))
    with atomic_write(os.path.join(results, f"{tag}.md"), "w", encoding="utf-8") as f:
        f.write(md)
    if docs_path:
        rel_png = os.path.relpath(png, os.path.dirname(docs_path))
        update_docs(docs_path, f"{len(runs)} of {len(recipe.stages)} runs done. Generated by "
                               f"`python3 -m benchmarks.recipe_study --report` from `benchmarks/results/{tag}/`.\n\n"
                               + md + f"\n![loss curves]({rel_png})\n")
    return md
