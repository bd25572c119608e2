"""llama.cpp as a reference for GGUF exports: built once, cached by version, then driven from Python.

    from benchmarks import llamacpp
    build_dir = llamacpp.build()                        # ~15 min the first time on 2 cores, then instant
    ids = llamacpp.tokenize("model.gguf", "some text")  # llama.cpp's own tokenizer (BOS / space prefix per GGUF)
    logits = llamacpp.logits("model.gguf", ids)         # float32 [n, vocab], every position, one llama_decode
    ppl = llamacpp.perplexity("model.gguf", "held_out.txt", n_ctx=256)
    llamacpp.quantize("model-f32.gguf", "model-tq2_0.gguf", "TQ2_0")
    speed = llamacpp.bench("model.gguf", threads=1, n_prompt=128, n_gen=64, depth=128)  # llama-bench, tok/s

Source: the llama-cpp-python source distribution (pinned VERSION) vendors llama.cpp; it is fetched
with `pip download` (or taken from $BITCPM_MS_LLAMACPP_SDIST), its `vendor/llama.cpp` extracted, and
built with cmake, GGML_NATIVE (so the cache key includes the CPU's SIMD features), shared libraries,
targets llama-perplexity, llama-quantize, llama-bench and libllama. Our logits/tokenizer dumper
(`llamacpp_dump.cpp`, linked against libllama) is compiled next to it, keyed by its source hash.
Cache: $BITCPM_MS_CACHE/llamacpp/<version>-<cpu>/ (default ~/.cache/bitcpm_ms). A file lock makes
concurrent callers (tests, benchmarks) wait for one build. Nothing of llama.cpp enters the repository.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

VERSION = "0.3.36"                      # llama-cpp-python; its vendored llama.cpp is what we build
TOOLS = ("llama-perplexity", "llama-quantize", "llama-bench")
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=ON",
               "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
               "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_APP=OFF",
               "-DLLAMA_BUILD_TOOLS=ON")
DUMPER_SRC = Path(__file__).with_name("llamacpp_dump.cpp")


class LlamaCppError(RuntimeError):
    """llama.cpp could not be fetched, built or run (the message carries its output)."""


def _cpu_key() -> str:
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((ln for ln in f if ln.startswith("flags")), ":").split(":", 1)[1].split())
    except OSError:
        pass
    simd = sorted(flags & {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vnni", "avx_vnni"})
    return hashlib.sha256(",".join(simd).encode()).hexdigest()[:8]


def cache_dir() -> Path:
    base = Path(os.environ.get("BITCPM_MS_CACHE") or Path.home() / ".cache" / "bitcpm_ms")
    return base / "llamacpp" / f"{VERSION}-{_cpu_key()}"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run(cmd, log=None, **kw) -> subprocess.CompletedProcess:
    """Run a command; a non-zero exit raises LlamaCppError with the end of its output."""
    if log:
        log("$ " + " ".join(str(c) for c in cmd))
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise LlamaCppError(f"{' '.join(str(c) for c in cmd)} failed ({r.returncode}):\n"
                            f"{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


def _sdist(root: Path, log) -> Path:
    env = os.environ.get("BITCPM_MS_LLAMACPP_SDIST")
    if env:
        return Path(env)
    path = root / f"llama_cpp_python-{VERSION}.tar.gz"
    if not path.exists():
        tmp = Path(tempfile.mkdtemp(dir=root))
        _run([sys.executable, "-m", "pip", "download", f"llama-cpp-python=={VERSION}", "--no-deps",
              "--no-binary", ":all:", "-d", tmp], log)
        os.replace(tmp / path.name, path)
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def source_dir(log=print) -> Path:
    """The extracted vendor/llama.cpp tree (also holds convert_hf_to_gguf.py and gguf-py)."""
    root = cache_dir()
    src = root / "llama.cpp"
    if not (src / "CMakeLists.txt").exists():
        with _locked(root / ".lock-src"):
            if not (src / "CMakeLists.txt").exists():
                prefix = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
                tmp = Path(tempfile.mkdtemp(dir=root))
                with tarfile.open(_sdist(root, log)) as tar:
                    members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
                    for m in members:
                        m.name = m.name[len(prefix):]
                    tar.extractall(tmp, members=[m for m in members if m.name])
                shutil.rmtree(src, ignore_errors=True)
                os.replace(tmp, src)
    return src


def build(jobs: int = 2, log=print) -> Path:
    """Build (once) and return the cmake build directory; its bin/ holds the tools and the dumper."""
    src = source_dir(log)
    root = cache_dir()
    out = root / "build"
    stamp = out / "bitcpm-build.json"
    want = {"flags": list(CMAKE_FLAGS), "tools": list(TOOLS)}
    with _locked(root / ".lock-build"):
        if not (stamp.exists() and json.loads(stamp.read_text()) == want):
            log(f"building llama.cpp {VERSION} in {out} (about 15 minutes on 2 cores)")
            _run(["cmake", "-S", src, "-B", out, *CMAKE_FLAGS], log)
            _run(["nice", "cmake", "--build", out, "-j", str(jobs), "--target", "llama", *TOOLS], log)
            stamp.write_text(json.dumps(want))
        _build_dumper(src, out, log)
    return out


def _build_dumper(src: Path, out: Path, log) -> Path:
    key = hashlib.sha256(DUMPER_SRC.read_bytes()).hexdigest()[:12]
    exe = out / "bin" / f"bitcpm-llama-dump-{key}"
    if not exe.exists():
        tmp = exe.with_name(exe.name + f".tmp-{os.getpid()}")
        _run([os.environ.get("CXX", "g++"), "-O2", "-std=c++17", DUMPER_SRC, "-o", tmp,
              "-I", src / "include", "-I", src / "ggml" / "include", "-L", out / "bin",
              "-lllama", "-lggml", "-lggml-base", f"-Wl,-rpath,{out / 'bin'}"], log)
        os.replace(tmp, exe)
    return exe


def tool(name: str) -> Path:
    """Path of a built binary: one of TOOLS, or "dump" for our dumper."""
    out = build(log=lambda m: None)
    if name == "dump":
        return _build_dumper(source_dir(), out, None)
    return out / "bin" / name


def tokenize(gguf: str, text: str, parse_special: bool = False) -> list:
    """Token ids of `text` by llama.cpp's tokenizer for this GGUF (add_special=True: BOS and a
    space prefix appear exactly when the GGUF's metadata asks for them; parse_special: control
    tokens written in the text become their ids, as in a rendered chat)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "text"), Path(tmp, "ids")
        src.write_bytes(text.encode("utf-8"))
        _run([tool("dump"), "tokenize_special" if parse_special else "tokenize", gguf, src, dst])
        return np.fromfile(dst, dtype=np.int32).tolist()


def logits(gguf: str, ids, threads: int = 1) -> np.ndarray:
    """float32 [len(ids), vocab]: llama.cpp's logits at every position of one sequence."""
    ids = np.asarray(ids, dtype=np.int32)
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp, "ids"), Path(tmp, "logits")
        ids.tofile(src)
        _run([tool("dump"), "logits", gguf, src, dst, threads])
        return np.fromfile(dst, dtype=np.float32).reshape(len(ids), -1)


def perplexity(gguf: str, text_file: str, n_ctx: int, threads: int = 2, attempts: int = 5) -> float:
    """llama-perplexity's final estimate: the file is tokenized whole, cut into chunks of n_ctx
    tokens, and in each chunk the second half is scored (see `chunked_nll` for the same on ids).

    llama.cpp's logger thread is deliberately never joined (llama.cpp issue 22142), so on a busy
    machine the last lines can be lost at exit; the run is repeated until they arrive (the running
    estimate printed after the last chunk equals the final one)."""
    cmd = [str(c) for c in (tool("llama-perplexity"), "-m", gguf, "-f", text_file, "-c", n_ctx, "-b", n_ctx,
                            "-t", threads)]
    for _ in range(attempts):
        with tempfile.TemporaryFile("w+") as out:
            r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT)
            out.seek(0)
            text = out.read()
        if r.returncode != 0:
            raise LlamaCppError(f"llama-perplexity failed ({r.returncode}):\n{text[-3000:]}")
        m = re.search(r"Final estimate: PPL = ([0-9.]+)", text)
        n = re.search(r"calculating perplexity over (\d+) chunks", text)
        last = re.findall(r"\[(\d+)\]([0-9.]+),", text)        # running estimate after each chunk
        if m:
            return float(m.group(1))
        if n and last and int(last[-1][0]) == int(n.group(1)):
            return float(last[-1][1])
    raise LlamaCppError(f"llama-perplexity printed no final estimate in {attempts} runs:\n{text[-2000:]}")


def chunked_nll(ids, n_ctx: int, logits_fn) -> tuple:
    """(sum of NLL, count) exactly as llama-perplexity scores a token stream: chunks of n_ctx ids,
    positions n_ctx//2 .. n_ctx-2 of each chunk predict the next id. logits_fn(chunk) -> [n_ctx, V]."""
    ids = np.asarray(ids, dtype=np.int64)
    first, total, count = n_ctx // 2, 0.0, 0
    for c in range(len(ids) // n_ctx):
        chunk = ids[c * n_ctx:(c + 1) * n_ctx]
        lg = np.asarray(logits_fn(chunk), dtype=np.float64)[first:n_ctx - 1]
        lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
        total += float((lse - lg[np.arange(len(lg)), chunk[first + 1:]]).sum())
        count += len(lg)
    return total, count


def quantize(src: str, dst: str, qtype: str, threads: int = 2, keep_embeddings: str = None) -> str:
    """llama-quantize SRC DST QTYPE (e.g. TQ2_0): llama.cpp's own re-quantization, for comparison.
    By default llama-quantize also re-quantizes token_embd / output (Q4_K and Q6_K for TQ2_0);
    keep_embeddings="f32" (or "f16") keeps them in that type, isolating the ternary tensors."""
    extra = ["--token-embedding-type", keep_embeddings, "--output-tensor-type", keep_embeddings] \
        if keep_embeddings else []
    _run([tool("llama-quantize"), *extra, src, dst, qtype, threads])
    return dst


def bench(gguf: str, threads: int, n_prompt: int = 128, n_gen: int = 64, reps: int = 5, depth: int = 0,
          poll: int = None) -> dict:
    """llama-bench prefill (pp n_prompt) and decode (tg n_gen) tokens/s: {"prefill": {...}, "decode": {...}}
    each with mean, stddev and the per-repetition samples (tokens/s). depth > 0: the decode test starts
    with `depth` tokens already in the KV cache (llama-bench -d), i.e. it decodes positions depth ..
    depth + n_gen - 1, like our decode after an n_prompt = depth prompt; the prefill test stays at depth 0.
    poll: llama-bench --poll (default 50: its workers spin between graph nodes; 0 sleeps at once, which
    is what a machine with more runnable threads than cores needs); llama-bench's defaults otherwise."""
    out = {}
    runs = [("-p", n_prompt, "-n", n_gen, "-d", 0)] if not depth else \
        [("-p", n_prompt, "-n", 0, "-d", 0), ("-p", 0, "-n", n_gen, "-d", depth)]
    for args in runs:
        extra = ["--poll", poll] if poll is not None else []
        text = _run([tool("llama-bench"), "-m", gguf, "-t", threads, *args, *extra, "-r", reps, "-o", "json"]).stdout
        for row in json.loads(text[text.index("["):text.rindex("]") + 1]):
            kind = "prefill" if row["n_prompt"] and not row["n_gen"] else "decode"
            tokens = row["n_prompt"] or row["n_gen"]
            samples = [tokens * 1e9 / ns for ns in row["samples_ns"]]
            out[kind] = {"tokens": tokens, "depth": row.get("n_depth", 0), "threads": row.get("n_threads", threads),
                         "mean_tok_s": row["avg_ts"], "stddev_tok_s": row["stddev_ts"], "samples_tok_s": samples,
                         "build": row.get("build_commit"), "cpu_info": row.get("cpu_info"),
                         "backends": row.get("backends"), "poll": row.get("poll", poll),
                         "kv_types": [row.get("type_k"), row.get("type_v")]}
    return out


if __name__ == "__main__":
    print(build())
