"""What every benchmark's JSON records about the machine, and writing that JSON."""
import json
import os
import platform
import time


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
            "python": platform.python_version(), "numpy": numpy.__version__}
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
