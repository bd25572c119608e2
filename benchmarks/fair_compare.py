"""Ours against a reference measured in interleaved rounds (issue 26's fair measurement): statistics of
both sides, the per-round ratio (round r of ours against round r of theirs, so slow drifts of a shared,
loaded machine cancel), and a target verdict computed from the spread of those ratios:
  met           every round's ratio reaches the target;
  missed        no round's ratio reaches it;
  inconclusive  the spread straddles the target (the noise does not allow a claim either way).
"""
import statistics


def stats(values) -> dict:
    v = [float(x) for x in values if x is not None]
    if not v:
        return {}
    return {"median": statistics.median(v), "mean": statistics.fmean(v), "min": min(v), "max": max(v), "n": len(v)}


def verdict(ratios, target: float) -> str:
    if not ratios:
        return "not measured"
    if min(ratios) >= target:
        return "met"
    if max(ratios) < target:
        return "missed"
    return "inconclusive"


def compare(ours, theirs, target: float = None, stretch: float = None, higher_is_better: bool = True) -> dict:
    """ours, theirs: per-round values (tokens/s when higher_is_better, else seconds), same length and
    order. The ratio is ours / theirs for rates, theirs / ours for times: > 1 means we are faster."""
    pairs = [(a, b) for a, b in zip(ours, theirs) if a is not None and b is not None]
    ratios = [(a / b if higher_is_better else b / a) for a, b in pairs]
    out = {"ours": stats(ours), "theirs": stats(theirs), "ratio": stats(ratios), "ratios": ratios}
    if target is not None:
        out["target"] = target
        out["verdict"] = verdict(ratios, target)
    if stretch is not None:
        out["stretch"] = stretch
        out["stretch_verdict"] = verdict(ratios, stretch)
    return out


def ratio_text(c: dict) -> str:
    """'0.93x (0.85-1.02), target 1.0: inconclusive' -- median ratio with its min-max spread."""
    r = c.get("ratio")
    if not r:
        return "not measured"
    text = f"{r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"
    if "target" in c:
        text += f", target {c['target']}: {c['verdict']}"
    if "stretch" in c:
        text += f"; stretch {c['stretch']}: {c['stretch_verdict']}"
    return text


def paired_ratios(runs: dict, theirs_by_key: dict, variants, targets: dict = None, suffix: str = "") -> dict:
    """generation_speed's per-round comparisons: runs[(shape, threads, isa)] = our samples (dicts with
    variant, batch, round and the rates), theirs_by_key[(shape, threads)] = the other side's rounds. For
    each variant at batch 1 and each of decode / prefill tokens/s: compare() of the rounds both sides
    have, with targets[(shape, quantity)] = (target, stretch) where given; keys
    "SHAPE threads=T isa=I VARIANT decode|prefill" + suffix."""
    out = {}
    for (shape, threads, isa), samples in runs.items():
        theirs = theirs_by_key.get((shape, threads))
        if not theirs:
            continue
        for variant in variants:
            mine = {s["round"]: s for s in samples if s["variant"] == variant and s["batch"] == 1}
            if not mine:
                continue
            for qty in ("decode_tok_s", "prefill_tok_s"):
                target, stretch = (targets or {}).get((shape, qty), (None, None))
                rounds = sorted(set(mine) & set(range(len(theirs))))
                out[f"{shape} threads={threads} isa={isa} {variant} {qty.split('_')[0]}{suffix}"] = compare(
                    [mine[r][qty] for r in rounds], [theirs[r][qty] for r in rounds], target, stretch)
    return out
