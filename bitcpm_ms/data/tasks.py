"""Tokenization tasks: clean, split (train / validation by document hash) and tokenize batches of
documents, in spawned worker processes, returned in submission order.

The output does not depend on the worker count: tasks are numbered and re-ordered, and the
split of a document depends only on a hash of its raw text.
"""
from __future__ import annotations

import hashlib
import multiprocessing as mp
import queue
import traceback
from typing import Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np

from .errors import DataError
from .manifest import SPLITS
from .tokenizer import SPTokenizer
from .gcide import clean_gcide_entry


def doc_hash(doc: str) -> float:
    """Deterministic position of a document in [0, 1) (blake2b of its raw UTF-8 text)."""
    h = hashlib.blake2b(doc.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0 ** 64


def is_validation(doc: str, fraction: float) -> bool:
    return fraction > 0 and doc_hash(doc) < fraction


def cleaner_fn(name: str):
    if name == "gcide":
        return clean_gcide_entry
    if name in ("none", None):
        return None
    raise DataError(f"unknown cleaner {name!r} (auto, none, gcide)")


_WORKER_TOK: Optional[SPTokenizer] = None


def encode_task(tok: SPTokenizer, docs: Sequence[str], cleaner: Optional[str], val_frac: float) -> dict:
    """Clean, split and tokenize one task (list of raw documents). Returns per-split int32 token
    arrays (document ids + EOS, in document order) and counters."""
    clean = cleaner_fn(cleaner) if cleaner else None
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


def chunk_documents(docs: Iterable[str], task_chars: int) -> Iterator[List[str]]:
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
