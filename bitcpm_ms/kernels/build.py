"""Build-on-first-use of the C++ kernel libraries (g++), cached by a hash of every source and
header, the flags, the compiler version and the CPU features.

Two libraries, each a `KernelLibrary` spec: `TERNARY` (``ops/ternary_matmul/``: packed ternary
matmul and the fake-quant op) and `FUSED_TRAIN` (``ops/fused_train/``: fused training ops, which
reuse the ternary library's thread pool source). Both compile ``ops/common/`` (the CPU-feature
detector and the C-ABI error helpers) into their own copy. ``library_path(spec)`` builds one on
first use.

Cache: ``$BITCPM_MS_CACHE/kernels/<key>/<library name>`` (default ``~/.cache/bitcpm_ms``).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple

from ..errors import BitCPMError


@dataclass(frozen=True)
class KernelLibrary:
    """One shared library: its file name, its sources (paths relative to ``ops/``; the first one's
    directory is the library's own), headers, include directories and compiler flags."""
    name: str
    sources: Tuple[str, ...]
    headers: Tuple[str, ...]
    cxxflags: Tuple[str, ...]
    include_dirs: Tuple[str, ...] = ()
    libs: Tuple[str, ...] = ()  # linker inputs after the sources
    env_src: str = ""         # environment variable that may point at another copy of the sources


# No -march: SIMD functions carry __attribute__((target(...))) (or sit in `#pragma GCC target`
# regions) and are chosen at run time. -fvisibility=hidden: only the extern "C" entry points
# (c_abi.cpp) are exported. -falign-functions=64: every kernel starts on a cache line, so its hot
# loops keep their alignment when unrelated code moves (the same AVX2 tile measured 3-16% slower
# from placement alone).
_COMMON_FLAGS = ("-O3", "-fPIC", "-shared", "-pthread", "-std=c++17", "-fvisibility=hidden", "-falign-functions=64")

# ops/common/, compiled into each library (each gets its own error state); found with -I common.
_COMMON_SOURCES = ("common/cpu_features.cpp", "common/c_abi_util.cpp")
_COMMON_HEADERS = ("common/cpu_features.h", "common/c_abi_util.h")

# One translation unit per code path (ggml-cpu style); all linked into the one library.
# -ffp-contract=off: every path gives bit-identical results where the tests demand it.
TERNARY = KernelLibrary(
    name="libbitcpm_ternary.so",
    sources=tuple(f"ternary_matmul/{f}" for f in
                  ("threads.cpp", "dispatch.cpp", "portable.cpp", "avx2.cpp", "avx2_a8.cpp", "avx2_decode.cpp",
                   "avx2_quant.cpp", "avx512.cpp", "c_abi.cpp", "decode_ops.cpp", "decode_layer.cpp",
                   "decode_model.cpp", "prefill_model.cpp"))
    + _COMMON_SOURCES,
    headers=("ternary_matmul/ternary_common.h", "ternary_matmul/avx2_common.h") + _COMMON_HEADERS,
    cxxflags=_COMMON_FLAGS + ("-ffp-contract=off",),
    include_dirs=("common",),
    env_src="BITCPM_MS_KERNEL_SRC")

# The kernel bodies (headers) are compiled once per instruction set by isa_*.cpp. FMA contraction
# is allowed (numerics tests compare against the numpy references with a tolerance), and undefined
# symbols fail the link rather than the first dlopen.
FUSED_TRAIN = KernelLibrary(
    name="libbitcpm_fused_train.so",
    sources=tuple(f"fused_train/{f}" for f in
                  ("isa_avx512.cpp", "isa_avx2.cpp", "isa_portable.cpp", "dispatch.cpp", "c_abi.cpp",
                   "blas_matmul.cpp"))
    + ("ternary_matmul/threads.cpp",) + _COMMON_SOURCES,
    headers=tuple(f"fused_train/{f}" for f in ("ft_common.h", "ft_vec.h", "ft_kernels.h", "ft_attention.h"))
    + ("ternary_matmul/ternary_common.h",) + _COMMON_HEADERS,
    cxxflags=_COMMON_FLAGS + ("-ffp-contract=fast", "-Wno-psabi", "-Wl,--no-undefined"),
    include_dirs=("ternary_matmul", "common"),
    libs=("-ldl",))

_lock = threading.Lock()
_built: dict = {}


class KernelBuildError(BitCPMError, RuntimeError):
    """The C++ kernels could not be built (no compiler, or the compiler failed: its stderr follows)."""


def ops_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "ops"


def _resolve(lib: KernelLibrary, rel: str) -> Path:
    """A source path of `lib`; its own directory may be redirected by `lib.env_src`."""
    env = os.environ.get(lib.env_src) if lib.env_src else None
    own = Path(lib.sources[0]).parent
    if env and Path(rel).parent == own:
        return Path(env) / Path(rel).name
    return ops_dir() / rel


def source_dir(lib: KernelLibrary = TERNARY) -> Path:
    return _resolve(lib, lib.sources[0]).parent


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
    wanted = {"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"}
    return platform.machine() + ":" + ",".join(sorted(flags & wanted))


def _compiler() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise KernelBuildError(f"C++ compiler {cxx!r} not found on PATH (set CXX)")
    return cxx


def build_key(lib: KernelLibrary = TERNARY) -> str:
    h = hashlib.sha256()
    for rel in lib.sources + lib.headers:
        p = _resolve(lib, rel)
        if not p.exists():
            raise KernelBuildError(f"kernel source not found: {p}")
        h.update(rel.encode())
        h.update(p.read_bytes())
    cxx = _compiler()
    ver = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    h.update(repr((lib.cxxflags, lib.include_dirs, lib.libs, cxx, ver, _cpu_features())).encode())
    return h.hexdigest()[:16]


def library_path(lib: KernelLibrary = TERNARY) -> Path:
    """Path of the built library `lib`; builds it if needed.

    The first answer is kept for the life of the process: the library is loaded once (its thread
    and ISA settings live in that copy), so a graph compiled later must call the same build even if
    the sources changed on disk meanwhile (a long training run whose checkout is edited would
    otherwise load a second, unconfigured copy at its final evaluation)."""
    with _lock:
        if lib.name in _built:
            return _built[lib.name]
    key = build_key(lib)
    with _lock:
        if lib.name in _built:
            return _built[lib.name]
        out_dir = cache_root() / key
        path = out_dir / lib.name
        if not path.exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / f".{lib.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
            includes = [f"-I{ops_dir() / d}" for d in lib.include_dirs]
            cmd = [_compiler(), *lib.cxxflags, *includes, "-o", str(tmp),
                   *[str(_resolve(lib, s)) for s in lib.sources], *lib.libs]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                try:
                    tmp.unlink()
                except OSError:
                    pass
                raise KernelBuildError(f"building {lib.name} failed ({' '.join(cmd)}):\n{proc.stderr}")
            os.replace(tmp, path)  # atomic on POSIX
        _built[lib.name] = path
        return path
