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
    return sorted(flags & {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vnni", "avx_vnni"})


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


def write_results(doc: dict, path: str) -> str:
    """doc + machine + time as indented JSON at `path` (directories made); prints and returns the path."""
    doc = dict(doc, machine=machine_info(), time=time.time())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"wrote {path}")
    return path
