"""Corpus -> tokenizer -> packed MindRecord shards + manifest.

Pipeline (``prepare_dataset``):

1. resolve the inputs (files/dirs/globs, or ``"gcide"`` for the installed Debian dictionary),
   hash every source file (sha256) and compute the configuration fingerprint;
2. if the output directory already holds a complete dataset with that fingerprint: no-op;
   if it holds a different one: ``DataError`` unless ``overwrite``;
3. build into ``<output_dir>.tmp-<pid>`` and ``os.rename`` it into place at the very end, after
   the manifest is written, so an interrupted run never leaves a directory that looks complete
   (stale ``.tmp-<pid>`` directories of dead processes are removed on the next run);
4. tokenizer: copy ``tokenizer_model`` if given, else train SentencePiece on a deterministic,
   bounded sample of the *training* documents (``tokenizer_sample_bytes``);
5. the main process streams documents and groups them into tasks of about ``task_chars``
   characters; ``num_workers`` spawned processes clean + split + tokenize them; results are
   re-ordered by task number so the output does not depend on the worker count. At most
   ``2 * num_workers + 1`` tasks are in flight (bounded memory);
6. every document is assigned to train or validation by a hash of its raw text (blake2b, fixed:
   independent of seed, worker count and file order); its ids plus one EOS are appended to the
   split's token stream, which is cut into samples of ``seq_length + 1`` ids (the tail shorter
   than one sample is dropped and counted);
7. samples are collected into shards of ``shard_samples`` rows; a train shard is permuted with a
   generator seeded by ``(seed, shard index)`` (shuffle within shards: bounded memory; the
   loader adds a global shuffle across shards each epoch) and written as
   ``train/shard_NNNNN.mindrecord`` (column ``input_ids``, int32, length ``seq_length + 1``);
   validation shards keep corpus order.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import queue
import shutil
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import DataError, DataWarning
from .readers import ReadStats, detect_format, iter_documents, resolve_paths, uncompressed_size_estimate
from .tokenizer import EOS_ID, SPTokenizer, file_sha256, load_sentencepiece, train_tokenizer

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.model"
SPLITS = ("train", "validation")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CACHE = os.path.join(REPO_ROOT, "data_cache")


@dataclass
class PrepareConfig:
    """Everything that determines a prepared dataset (see docs/data.md, YAML section ``data:``)."""
    input: Union[str, List[str]] = "gcide"       # path(s)/dir(s)/glob(s) or "gcide"
    format: str = "auto"                           # auto | text | jsonl | parquet | dictd
    text_field: str = "text"                       # jsonl / parquet
    doc_separator: Optional[str] = "\n\n"          # text: "\n\n" = blank line(s); None = whole file
    cleaner: str = "auto"                          # auto | none | gcide
    output_dir: Optional[str] = None               # default data_cache/<name>_v<vocab>_s<seq>
    name: Optional[str] = None                     # default: "gcide" or the first input's stem
    seq_length: int = 256                          # samples hold seq_length + 1 ids
    validation_fraction: float = 0.01
    seed: int = 1234
    shuffle: bool = True
    shard_samples: int = 8192
    num_workers: int = 2                           # 0: tokenize in the main process
    task_chars: int = 1 << 18
    tokenizer_model: Optional[str] = None          # an existing SentencePiece .model
    vocab_size: int = 8192
    tokenizer_type: str = "bpe"
    tokenizer_sample_bytes: int = 16_000_000
    progress: bool = True

    # keys that do not change the output
    _NON_OUTPUT = ("output_dir", "num_workers", "progress", "name", "task_chars")

    def fingerprint_fields(self) -> dict:
        d = asdict(self)
        for k in self._NON_OUTPUT:
            d.pop(k, None)
        d.pop("input")
        if self.tokenizer_model:
            for k in ("vocab_size", "tokenizer_type", "tokenizer_sample_bytes"):
                d.pop(k)
            d["tokenizer_model"] = None      # replaced by its sha256 below
        return d


# --------------------------------------------------------------------------- helpers
def doc_hash(doc: str) -> float:
    """Deterministic position of a document in [0, 1) (blake2b of its raw UTF-8 text)."""
    h = hashlib.blake2b(doc.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def is_validation(doc: str, fraction: float) -> bool:
    return fraction > 0 and doc_hash(doc) < fraction


def _cleaner_fn(name: str):
    if name == "gcide":
        from .gcide import clean_gcide_entry
        return clean_gcide_entry
    if name in ("none", None):
        return None
    raise DataError(f"unknown cleaner {name!r} (auto, none, gcide)")


def resolve_inputs(cfg: PrepareConfig) -> Tuple[List[str], str, str]:
    """Files, the effective cleaner and the dataset name for a config."""
    spec = cfg.input
    if spec == "gcide" or spec == ["gcide"]:
        from .gcide import gcide_path
        files = [gcide_path()]
    else:
        files = resolve_paths(spec)
    cleaner = cfg.cleaner
    if cleaner == "auto":
        cleaner = "gcide" if all(os.path.basename(f).startswith("gcide") and detect_format(f) == "dictd"
                                 for f in files) else "none"
    name = cfg.name
    if not name:
        if spec == "gcide" or cleaner == "gcide":
            name = "gcide"
        else:
            base = os.path.basename(files[0])
            name = base.split(".")[0] or "corpus"
    return files, cleaner, name


def default_output_dir(name: str, vocab_size: int, seq_length: int) -> str:
    return os.path.join(DEFAULT_CACHE, f"{name}_v{vocab_size}_s{seq_length}")


def read_manifest(dataset_dir: str) -> dict:
    path = os.path.join(dataset_dir, MANIFEST)
    if not os.path.isfile(path):
        raise DataError(f"{dataset_dir}: no {MANIFEST}; not a dataset prepared by run/prepare_data.py "
                        f"(or an interrupted one)")
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_tmp(out_dir: str):
    parent, base = os.path.split(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        if entry.startswith(base + ".tmp-") or entry.startswith(base + ".old-"):
            try:
                pid = int(entry.rsplit("-", 1)[1])
            except ValueError:
                continue
            if not _pid_alive(pid):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _json_default(o):
    """numpy scalars as Python numbers; anything else unknown as its str()."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    return str(o)


def atomic_json(obj, path: str):
    """Write JSON to a temporary file, fsync, then rename over `path` (never half-written)."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False, default=_json_default)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- tokenization tasks
_WORKER_TOK: Optional[SPTokenizer] = None


def encode_task(tok: SPTokenizer, docs: Sequence[str], cleaner: Optional[str], val_frac: float) -> dict:
    """Clean, split and tokenize one task (list of raw documents). Returns per-split int32 token
    arrays (document ids + EOS, in document order) and counters."""
    clean = _cleaner_fn(cleaner) if cleaner else None
    texts = {s: [] for s in SPLITS}
    raw_bytes = 0
    dropped = 0
    for raw in docs:
        raw_bytes += len(raw.encode("utf-8", "surrogatepass"))
        split = "validation" if is_validation(raw, val_frac) else "train"
        text = clean(raw) if clean else raw
        if not text:
            dropped += 1
            continue
        texts[split].append(text)
    out = {"raw_bytes": raw_bytes, "dropped_empty": dropped}
    for split in SPLITS:
        docs_s = texts[split]
        ids = tok.sp.encode(docs_s, num_threads=1) if docs_s else []
        total = sum(len(x) for x in ids) + len(ids)
        arr = np.empty(total, dtype=np.int32)
        pos = 0
        for x in ids:
            n = len(x)
            arr[pos:pos + n] = x
            arr[pos + n] = tok.eos_id
            pos += n + 1
        out[split] = {"ids": arr, "documents": len(docs_s),
                      "text_bytes": sum(len(t.encode("utf-8", "surrogatepass")) for t in docs_s)}
    return out


def _worker_main(model_path: str, in_q, out_q):
    try:
        tok = SPTokenizer(model_path)
    except BaseException as exc:  # report and stop
        out_q.put((-1, ("error", f"worker could not load tokenizer: {exc!r}")))
        return
    while True:
        item = in_q.get()
        if item is None:
            break
        seq, docs, cleaner, frac = item
        try:
            res = encode_task(tok, docs, cleaner, frac)
        except BaseException:
            out_q.put((seq, ("error", traceback.format_exc())))
            continue
        out_q.put((seq, res))


def _chunk_documents(docs: Iterable[str], task_chars: int) -> Iterator[List[str]]:
    buf, n = [], 0
    for d in docs:
        buf.append(d)
        n += len(d)
        if n >= task_chars:
            yield buf
            buf, n = [], 0
    if buf:
        yield buf


def run_tasks(model_path: str, tasks: Iterator[List[str]], cleaner: Optional[str], val_frac: float,
              num_workers: int) -> Iterator[dict]:
    """Encode tasks in order, in ``num_workers`` spawned processes (0: in this process)."""
    if num_workers <= 0:
        tok = SPTokenizer(model_path)
        for docs in tasks:
            yield encode_task(tok, docs, cleaner, val_frac)
        return
    ctx = mp.get_context("spawn")
    in_q, out_q = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker_main, args=(model_path, in_q, out_q), daemon=True,
                         name=f"bitcpm-data-{i}") for i in range(num_workers)]
    for p in procs:
        p.start()
    max_inflight = 2 * num_workers + 1
    pending: Dict[int, dict] = {}
    submitted = next_seq = 0
    exhausted = False
    try:
        while True:
            while not exhausted and submitted - next_seq < max_inflight:
                try:
                    docs = next(tasks)
                except StopIteration:
                    exhausted = True
                    break
                in_q.put((submitted, docs, cleaner, val_frac))
                submitted += 1
            if exhausted and next_seq == submitted:
                break
            while True:
                try:
                    seq, res = out_q.get(timeout=5.0)
                    break
                except queue.Empty:
                    dead = [p.name for p in procs if not p.is_alive()]
                    if dead:
                        raise DataError(f"tokenizer worker(s) {dead} died (out of memory or killed)")
            if isinstance(res, tuple) and res and res[0] == "error":
                raise DataError(f"tokenizer worker failed: {res[1]}")
            pending[seq] = res
            while next_seq in pending:
                yield pending.pop(next_seq)
                next_seq += 1
    finally:
        for _ in procs:
            try:
                in_q.put(None)
            except Exception:
                pass
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        in_q.close()
        out_q.close()


# --------------------------------------------------------------------------- writing
SCHEMA = {"input_ids": {"type": "int32", "shape": [-1]}}
PAGE_SIZE = 1 << 17     # the 32 MB default preallocates 50 MB (sparse) files even for tiny shards


def write_shard(path: str, rows: np.ndarray):
    from mindspore.mindrecord import FileWriter
    writer = FileWriter(file_name=path, shard_num=1, overwrite=True)
    writer.set_page_size(PAGE_SIZE)
    writer.add_schema(SCHEMA, "bitcpm_packed_tokens")
    for i in range(0, len(rows), 2048):
        writer.write_raw_data([{"input_ids": r} for r in rows[i:i + 2048]])
    writer.commit()


class SplitPacker:
    """Concatenate token arrays, cut ``sample_len`` rows, write shards (see module doc)."""

    def __init__(self, out_dir: str, split: str, sample_len: int, shard_samples: int,
                 shuffle: bool, seed: int):
        self.dir = os.path.join(out_dir, split)
        os.makedirs(self.dir, exist_ok=True)
        self.split, self.L, self.shard_samples = split, sample_len, shard_samples
        self.shuffle, self.seed = shuffle, seed
        self.carry = np.empty(0, np.int32)
        self.rows: List[np.ndarray] = []
        self.n_rows = 0
        self.files: List[dict] = []
        self.tokens = self.documents = self.text_bytes = 0
        self.samples = 0

    def add(self, ids: np.ndarray, documents: int, text_bytes: int):
        self.tokens += len(ids)
        self.documents += documents
        self.text_bytes += text_bytes
        buf = np.concatenate([self.carry, ids]) if len(self.carry) else ids
        n = len(buf) // self.L
        if n:
            self.rows.append(buf[: n * self.L].reshape(n, self.L))
            self.n_rows += n
        self.carry = buf[n * self.L:].copy()
        while self.n_rows >= self.shard_samples:
            self._flush(self.shard_samples)

    def _flush(self, n: int):
        allrows = np.concatenate(self.rows) if len(self.rows) > 1 else self.rows[0]
        shard, rest = allrows[:n], allrows[n:]
        self.rows = [rest] if len(rest) else []
        self.n_rows = len(rest)
        index = len(self.files)
        if self.shuffle and self.split == "train":
            perm = np.random.default_rng([self.seed, index]).permutation(n)
            shard = shard[perm]
        name = f"shard_{index:05d}.mindrecord"
        write_shard(os.path.join(self.dir, name), np.ascontiguousarray(shard))
        self.files.append({"file": f"{self.split}/{name}", "samples": int(n)})
        self.samples += n

    def finish(self) -> dict:
        if self.n_rows:
            self._flush(self.n_rows)
        for f in self.files:
            f["sha256"] = file_sha256(os.path.join(os.path.dirname(self.dir), f["file"]))
        tokens_in_samples = self.samples * self.L
        return {
            "documents": self.documents, "eos_tokens": self.documents, "tokens": self.tokens,
            "text_bytes": self.text_bytes, "samples": self.samples,
            "tokens_in_samples": tokens_in_samples,
            "dropped_tail_tokens": self.tokens - tokens_in_samples,
            "bytes_per_token": (self.text_bytes / self.tokens) if self.tokens else None,
            "files": self.files,
        }


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled and total > 0
        self.t0 = time.time()
        self.tokens = 0
        self.bar = None
        if self.enabled:
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1000,
                                desc="packing", file=sys.stderr, smoothing=0.1)
            except ImportError:
                self.bar = None

    def update(self, nbytes: int, ntokens: int):
        self.tokens += ntokens
        if self.bar is not None:
            self.bar.update(nbytes)
            el = max(time.time() - self.t0, 1e-9)
            self.bar.set_postfix_str(f"{self.tokens / el / 1e3:.0f}k tok/s", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------- main entry
def tokenizer_sample(files: List[str], cfg: PrepareConfig, cleaner: Optional[str]) -> Iterator[str]:
    """Deterministic, bounded sample of cleaned *training* documents: a document is taken when
    its hash falls in the first ``p`` of the training range, ``p`` from the estimated size."""
    est = sum(uncompressed_size_estimate(f) for f in files)
    p = min(1.0, 1.25 * cfg.tokenizer_sample_bytes / max(est, 1))
    vf = cfg.validation_fraction
    clean = _cleaner_fn(cleaner) if cleaner else None
    quiet = ReadStats(quiet=True)        # the packing pass reports reading problems
    for doc in iter_documents(files, cfg.format, cfg.text_field, cfg.doc_separator, stats=quiet):
        h = doc_hash(doc)
        if h < vf and vf > 0:
            continue
        if (h - vf) / (1.0 - vf) >= p:
            continue
        text = clean(doc) if clean else doc
        if text:
            yield text


def compute_fingerprint(cfg: PrepareConfig, sources: List[dict], cleaner: str,
                        tokenizer_sha: Optional[str]) -> str:
    payload = {"format_version": FORMAT_VERSION, "page_size": PAGE_SIZE, "config": cfg.fingerprint_fields(),
               "cleaner": cleaner, "sources": [[s["sha256"], s["bytes"]] for s in sources],
               "tokenizer_sha256": tokenizer_sha}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def prepare_dataset(cfg: PrepareConfig, overwrite: bool = False, log=print) -> dict:
    """Build (or reuse) the packed dataset described by ``cfg``. Returns the manifest (with
    ``"output_dir"`` and ``"reused"`` added). Raises ``DataError`` on bad input."""
    if cfg.seq_length < 1:
        raise DataError(f"seq_length must be >= 1, got {cfg.seq_length}")
    if not 0.0 <= cfg.validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {cfg.validation_fraction}")
    if cfg.shard_samples < 1:
        raise DataError("shard_samples must be >= 1")
    files, cleaner, name = resolve_inputs(cfg)
    sources = [{"path": f, "bytes": os.path.getsize(f), "sha256": file_sha256(f),
                "format": detect_format(f) if cfg.format == "auto" else cfg.format} for f in files]
    tok_sha = None
    if cfg.tokenizer_model:
        load_sentencepiece(cfg.tokenizer_model)      # validates
        tok_sha = file_sha256(cfg.tokenizer_model)
    fingerprint = compute_fingerprint(cfg, sources, cleaner, tok_sha)
    vocab_tag = cfg.vocab_size if not cfg.tokenizer_model else load_sentencepiece(cfg.tokenizer_model).get_piece_size()
    out_dir = os.path.abspath(cfg.output_dir or default_output_dir(name, vocab_tag, cfg.seq_length))

    _remove_stale_tmp(out_dir)
    if os.path.exists(out_dir):
        try:
            old = read_manifest(out_dir)
        except (DataError, ValueError):
            old = None
        if old is not None and old.get("fingerprint") == fingerprint and not overwrite:
            log(f"[prepare_data] {out_dir} is up to date (fingerprint {fingerprint[:12]}); nothing to do")
            old["output_dir"], old["reused"] = out_dir, True
            return old
        if not overwrite:
            what = (f"a dataset with a different configuration (fingerprint {old.get('fingerprint', '?')[:12]} "
                    f"!= {fingerprint[:12]})" if old is not None else "files that are not a complete dataset")
            raise DataError(f"output directory {out_dir} already holds {what}; choose another "
                            f"--output_dir or pass --overwrite to replace it")

    tmp_dir = f"{out_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    os.makedirs(tmp_dir)
    t_start = time.time()
    try:
        manifest = _build(cfg, files, sources, cleaner, name, fingerprint, tmp_dir, log)
        manifest["timing"]["total_seconds"] = round(time.time() - t_start, 3)
        atomic_json(manifest, os.path.join(tmp_dir, MANIFEST))
        if os.path.exists(out_dir):
            old_dir = f"{out_dir}.old-{os.getpid()}"
            os.rename(out_dir, old_dir)
            os.rename(tmp_dir, out_dir)
            shutil.rmtree(old_dir, ignore_errors=True)
        else:
            os.rename(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    manifest["output_dir"], manifest["reused"] = out_dir, False
    return manifest


def _build(cfg, files, sources, cleaner, name, fingerprint, tmp_dir, log) -> dict:
    tok_path = os.path.join(tmp_dir, TOKENIZER_FILE)
    t0 = time.time()
    if cfg.tokenizer_model:
        shutil.copyfile(cfg.tokenizer_model, tok_path)
        trained = False
    else:
        log(f"[prepare_data] training SentencePiece {cfg.tokenizer_type} vocab={cfg.vocab_size} on "
            f"<= {cfg.tokenizer_sample_bytes / 1e6:.0f} MB of {name}")
        train_tokenizer(tokenizer_sample(files, cfg, cleaner if cleaner != "none" else None), tok_path,
                        vocab_size=cfg.vocab_size, model_type=cfg.tokenizer_type,
                        max_sample_bytes=cfg.tokenizer_sample_bytes)
        trained = True
    t_tok = time.time() - t0
    sp = load_sentencepiece(tok_path)
    if sp.eos_id() != EOS_ID and trained:
        raise DataError("internal: trained tokenizer has an unexpected EOS id")

    L = cfg.seq_length + 1
    packers = {s: SplitPacker(tmp_dir, s, L, cfg.shard_samples, cfg.shuffle, cfg.seed) for s in SPLITS}
    stats = ReadStats()
    est = sum(uncompressed_size_estimate(f) for f in files)
    prog = _Progress(est, cfg.progress)
    raw_bytes = dropped_empty = 0
    t1 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        docs = iter_documents(files, cfg.format, cfg.text_field, cfg.doc_separator, stats=stats)
        tasks = _chunk_documents(docs, cfg.task_chars)
        try:
            for res in run_tasks(tok_path, tasks, cleaner if cleaner != "none" else None,
                                 cfg.validation_fraction, cfg.num_workers):
                raw_bytes += res["raw_bytes"]
                dropped_empty += res["dropped_empty"]
                ntok = 0
                for s in SPLITS:
                    r = res[s]
                    packers[s].add(r["ids"], r["documents"], r["text_bytes"])
                    ntok += len(r["ids"])
                prog.update(res["raw_bytes"], ntok)
        finally:
            prog.close()
    for w in caught:
        warnings.warn(w.message, w.category, stacklevel=2)
    t_pack = time.time() - t1
    splits = {s: packers[s].finish() for s in SPLITS}
    src_desc = ", ".join(files)
    if splits["train"]["samples"] == 0:
        raise DataError(f"corpus {src_desc} too small: {splits['train']['tokens']} training tokens, "
                        f"fewer than one sample of seq_length + 1 = {L}")
    if cfg.validation_fraction > 0 and splits["validation"]["samples"] == 0:
        raise DataError(f"corpus {src_desc}: validation split ({cfg.validation_fraction:.2%} of documents, "
                        f"{splits['validation']['tokens']} tokens) is shorter than one sample of {L} ids; "
                        f"raise validation_fraction or use a larger corpus")
    total_tokens = sum(splits[s]["tokens"] for s in SPLITS)
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "fingerprint": fingerprint,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)},
        "sources": sources,
        "cleaner": cleaner,
        "seq_length": cfg.seq_length,
        "sample_length": L,
        "column": "input_ids",
        "dtype": "int32",
        "seed": cfg.seed,
        "shuffle": cfg.shuffle,
        "validation_fraction": cfg.validation_fraction,
        "vocab_size": sp.get_piece_size(),
        "tokenizer": {"file": TOKENIZER_FILE, "sha256": file_sha256(tok_path), "trained": trained,
                      "model_type": cfg.tokenizer_type if trained else None,
                      "source": cfg.tokenizer_model,
                      "pad_id": sp.pad_id(), "bos_id": sp.bos_id(), "eos_id": sp.eos_id(),
                      "unk_id": sp.unk_id()},
        "reading": {"documents": stats.documents, "empty_documents": stats.empty_documents,
                    "empty_after_cleaning": dropped_empty, "raw_text_bytes": raw_bytes,
                    "invalid_utf8_bytes": stats.invalid_utf8,
                    "files_with_invalid_utf8": stats.files_with_invalid_utf8,
                    "bad_records": stats.bad_records},
        "splits": splits,
        "timing": {"tokenizer_seconds": round(t_tok, 3), "packing_seconds": round(t_pack, 3),
                   "num_workers": cfg.num_workers,
                   "mb_per_s": round(raw_bytes / 1e6 / max(t_pack, 1e-9), 3),
                   "tokens_per_s": round(total_tokens / max(t_pack, 1e-9), 1)},
    }
    log(f"[prepare_data] {name}: {stats.documents} documents, {raw_bytes / 1e6:.1f} MB raw, "
        f"{total_tokens} tokens; train {splits['train']['samples']} samples, validation "
        f"{splits['validation']['samples']} samples of {L} ids; {t_pack:.1f} s packing "
        f"({raw_bytes / 1e6 / max(t_pack, 1e-9):.1f} MB/s)")
    return manifest


def split_files(dataset_dir: str, split: str = "train") -> List[str]:
    """Absolute MindRecord files of one split (from the manifest, checked to exist)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (train, validation)")
    man = read_manifest(dataset_dir)
    files = [os.path.join(dataset_dir, f["file"]) for f in man["splits"][split]["files"]]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise DataError(f"{dataset_dir}: manifest lists missing shard(s) {missing}")
    if not files:
        raise DataError(f"{dataset_dir}: split {split!r} has no samples")
    return files


def bytes_per_token(dataset_dir_or_manifest, split: str = "validation") -> float:
    man = dataset_dir_or_manifest if isinstance(dataset_dir_or_manifest, dict) else read_manifest(dataset_dir_or_manifest)
    return man["splits"][split]["bytes_per_token"]
