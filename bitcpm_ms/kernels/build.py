"""Build-on-first-use of the C++ ternary matmul library (g++), cached by a hash of every source and
header, the flags, the compiler version and the CPU features.

Cache: ``$BITCPM_MS_CACHE/kernels/<key>/libbitcpm_ternary.so`` (default ``~/.cache/bitcpm_ms``).
The library is compiled to a unique temporary name in the same directory and renamed into place,
so concurrent processes (pytest workers, msrun ranks) never see a half-written file.
A compiler failure raises KernelBuildError carrying the compiler's stderr.

Note: a MindIR exported with the AOT op records the absolute path of the ``.so``; keep the cache
directory (or set BITCPM_MS_CACHE to a stable place) where exported models will be loaded.
"""
from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

from ..errors import BitCPMError

LIB_NAME = "libbitcpm_ternary.so"
# One translation unit per code path (ggml-cpu style); all linked into the one library.
SOURCES = ("threads.cpp", "dispatch.cpp", "portable.cpp", "avx2.cpp", "avx512.cpp", "c_abi.cpp",
           "decode_ops.cpp")
HEADERS = ("ternary_common.h",)
# No -march: SIMD functions carry __attribute__((target(...))) and are chosen at run time.
# -fvisibility=hidden: only the extern "C" entry points (c_abi.cpp) are exported.
# -falign-functions=64: every kernel starts on a cache line, so its hot loops keep their alignment
# when unrelated code moves (the same AVX2 tile measured 3-16% slower from placement alone).
CXXFLAGS = ("-O3", "-fPIC", "-shared", "-pthread", "-std=c++17", "-ffp-contract=off", "-fvisibility=hidden",
            "-falign-functions=64")

_lock = threading.Lock()
_built: dict = {}


class KernelBuildError(BitCPMError, RuntimeError):
    """The C++ kernels could not be built (no compiler, or the compiler failed: its stderr follows)."""


def source_dir() -> Path:
    env = os.environ.get("BITCPM_MS_KERNEL_SRC")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "ops" / "ternary_matmul"


def cache_root() -> Path:
    env = os.environ.get("BITCPM_MS_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "bitcpm_ms"
    return base / "kernels"


def _cpu_features() -> str:
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return platform.machine() + ":" + ",".join(sorted(flags & {"avx2", "fma", "avx512f", "avx512bw", "avx512vnni"}))


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise KernelBuildError(f"C++ compiler {cxx!r} not found on PATH (set CXX)")
    return cxx


def build_key() -> str:
    h = hashlib.sha256()
    src = source_dir()
    for name in SOURCES + HEADERS:
        p = src / name
        if not p.exists():
            raise KernelBuildError(f"kernel source not found: {p}")
        h.update(name.encode())
        h.update(p.read_bytes())
    cxx = _compiler()
    ver = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    h.update(repr((CXXFLAGS, cxx, ver, _cpu_features())).encode())
    return h.hexdigest()[:16]


def library_path() -> Path:
    """Path of the built library; builds it if needed."""
    key = build_key()
    with _lock:
        if key in _built:
            return _built[key]
        out_dir = cache_root() / key
        lib = out_dir / LIB_NAME
        if not lib.exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / f".{LIB_NAME}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
            cmd = [_compiler(), *CXXFLAGS, "-o", str(tmp), *[str(source_dir() / s) for s in SOURCES]]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                try:
                    tmp.unlink()
                except OSError:
                    pass
                raise KernelBuildError(f"building {LIB_NAME} failed ({' '.join(cmd)}):\n{proc.stderr}")
            os.replace(tmp, lib)  # atomic on POSIX
        _built[key] = lib
        return lib
