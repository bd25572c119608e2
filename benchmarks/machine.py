"""What every benchmark's JSON records about the machine, writing that JSON, and the verdict on a target.

A target is stated as met or missed by code, from the measurements, with their spread: a verdict
needs the whole confidence interval on one side of the bar, otherwise it is "not resolved". Each
benchmark that states a target writes `target(...)` records under "targets" in its JSON, and
`python3 -m benchmarks.targets` renders the README's table from those records, so no verdict is
typed by hand.
"""
import json
import os
import platform
import random
import statistics
import time


# environment variables that set thread pools (OpenMP, MKL, OpenBLAS, our fused kernels)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "BITCPM_MS_NUM_THREADS",
              "OMP_WAIT_POLICY", "KMP_BLOCKTIME")


def time_calls(fn, args, n) -> list:
    """Wall seconds of each of n calls fn(*args), each one synchronized by reading its output (the first
    one of a tuple) back to numpy: MindSpore runs asynchronously until then."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        res = fn(*args)
        (res[0] if isinstance(res, tuple) else res).asnumpy()
        times.append(time.perf_counter() - t0)
    return times


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        return platform.processor() or platform.machine()


def cpu_flags() -> list:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = set(next((ln for ln in f if ln.startswith("flags")), ":").split(":", 1)[1].split())
    except OSError:
        return []
    # every SIMD flag (Linux spells VNNI "avx512_vnni" / "avx_vnni")
    return sorted(f for f in flags if f.startswith(("sse", "ssse", "avx", "fma", "f16c", "amx")))


def machine_info() -> dict:
    import numpy
    info = {"cpu": cpu_model(), "simd": cpu_flags(), "cores": os.cpu_count(), "load": os.getloadavg(),
            "python": platform.python_version(), "numpy": numpy.__version__,
            "thread_env": {k: os.environ.get(k) for k in THREAD_ENV if os.environ.get(k) is not None}}
    try:
        import mindspore
        info["mindspore"] = mindspore.__version__
    except ImportError:
        pass
    return info


def start_info() -> dict:
    """Taken when a benchmark starts (the load average then, before our own processes add to it)."""
    return {"load_at_start": os.getloadavg(), "time_at_start": time.time()}


def write_results(doc: dict, path: str, start: dict = None) -> str:
    """doc + machine (+ `start`, a start_info() taken at the beginning) + time as indented JSON at `path`
    (directories made); prints and returns the path."""
    doc = dict(doc, machine=dict(machine_info(), **(start or {})), time=time.time())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {path}")
    return path


# ---------------------------------------------------------------- confidence intervals and verdicts
def bootstrap_ci(rounds, stat, n_boot=2000, level=0.95, seed=0):
    """(estimate, [lo, hi]) of `stat` over interleaved measurement rounds.

    `rounds`: a list of rounds, each a dict {variant: [samples]} measured back to back under the
    same load. `stat(pooled)` maps {variant: [samples of the chosen rounds]} to a number. Whole
    rounds are resampled with replacement (the variants of a round stay together), so drift of the
    machine's load between rounds widens the interval instead of being averaged away; the percentile
    interval at `level`. With fewer than 2 rounds the interval is the estimate itself."""
    def pool(chosen):
        out = {}
        for r in chosen:
            for k, v in r.items():
                out.setdefault(k, []).extend(v)
        return out
    est = stat(pool(rounds))
    if len(rounds) < 2:
        return est, [est, est]
    rng = random.Random(seed)
    boots = sorted(stat(pool([rounds[rng.randrange(len(rounds))] for _ in rounds])) for _ in range(n_boot))
    a = (1.0 - level) / 2.0
    return est, [boots[int(a * (n_boot - 1))], boots[int((1.0 - a) * (n_boot - 1))]]


def median_ratio(num, den):
    """A `stat` for bootstrap_ci: median(samples[num]) / median(samples[den])."""
    return lambda s: statistics.median(s[num]) / statistics.median(s[den])


def verdict(ci, bar, higher_is_better=True):
    """"met" when the whole interval is on the good side of `bar`, "missed" when it is wholly on the
    bad side, else "not resolved" (the measurement cannot tell). A point measurement: ci = [x, x]."""
    lo, hi = ci
    good_lo, good_hi = (lo >= bar, hi >= bar) if higher_is_better else (hi <= bar, lo <= bar)
    if good_lo and good_hi:
        return "met"
    if not good_lo and not good_hi:
        return "missed"
    return "not resolved"


def target(name, value, ci, bar, higher_is_better=True, unit="", method=""):
    """One record for a JSON's "targets" list: the measured value, its interval, the bar and the verdict."""
    return {"target": name, "value": value, "interval": list(ci), "bar": bar,
            "direction": ">=" if higher_is_better else "<=", "unit": unit, "method": method,
            "verdict": verdict(ci, bar, higher_is_better)}


def target_line(t: dict) -> str:
    """A target record as one printed line: `target >= 1.0x: met`."""
    return f"target {t['direction']} {t['bar']}{t['unit']}: {t['verdict']}"
