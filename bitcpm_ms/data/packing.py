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
   ``train/shard_NNNNN.mindrecord`` (column ``input_ids``, int32, length ``seq_length + 1``, and
   ``actual_seq_len``, int32, length ``eod_pad_length``: the cumulative document ends among the
   sample's inputs, data/documents.py); validation shards keep corpus order.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from dataclasses import asdict
from typing import Iterator, List, Optional, Tuple

import numpy as np

from ..fileio import atomic_dir, atomic_json, remove_stale_tmp
from .config import PrepareConfig
from .documents import ACTUAL_SEQ_LEN, rows_actual_seq_len
from .errors import DataError, DataWarning
from .manifest import (FORMAT_VERSION, MANIFEST, PAGE_SIZE, SPLITS, TOKENIZER_FILE, compute_fingerprint,
                       read_manifest)
from .readers import ReadStats, iter_documents
from .sources import detect_format, resolve_paths, uncompressed_size_estimate
from .tasks import chunk_documents, cleaner_fn, doc_hash, run_tasks
from .tokenizer import EOS_ID, check_vocab_size, file_sha256, load_sentencepiece, train_tokenizer
from .gcide import gcide_path

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_CACHE = os.path.join(REPO_ROOT, "data_cache")


def resolve_inputs(cfg: PrepareConfig) -> Tuple[List[str], str, str]:
    """Files, the effective cleaner and the dataset name for a config."""
    spec = cfg.input
    if spec == "gcide" or spec == ["gcide"]:
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


SCHEMA = {"input_ids": {"type": "int32", "shape": [-1]}, ACTUAL_SEQ_LEN: {"type": "int32", "shape": [-1]}}


def write_shard(path: str, rows: np.ndarray, ends: np.ndarray):
    """rows [n, seq_length + 1] and their actual_seq_len [n, eod_pad_length] as one MindRecord file."""
    from mindspore.mindrecord import FileWriter
    writer = FileWriter(file_name=path, shard_num=1, overwrite=True)
    writer.set_page_size(PAGE_SIZE)
    writer.add_schema(SCHEMA, "bitcpm_packed_tokens")
    for i in range(0, len(rows), 2048):
        writer.write_raw_data([{"input_ids": r, ACTUAL_SEQ_LEN: e} for r, e in zip(rows[i:i + 2048], ends[i:i + 2048])])
    writer.commit()


class SplitPacker:
    """Concatenate token arrays, cut ``sample_len`` rows, write shards with their document ends
    (see module doc)."""

    def __init__(self, out_dir: str, split: str, sample_len: int, shard_samples: int,
                 shuffle: bool, seed: int, eos_id: int, eod_pad_length: int):
        self.dir = os.path.join(out_dir, split)
        os.makedirs(self.dir, exist_ok=True)
        self.split, self.L, self.shard_samples = split, sample_len, shard_samples
        self.shuffle, self.seed = shuffle, seed
        self.eos_id, self.width = eos_id, eod_pad_length
        self.max_documents = 0
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
        ends = rows_actual_seq_len(shard, self.eos_id, self.width, where=f"{self.split} {name}: ")
        self.max_documents = max(self.max_documents, int((ends < self.L - 1).sum(axis=1).max()) + 1)
        write_shard(os.path.join(self.dir, name), np.ascontiguousarray(shard), ends)
        self.files.append({"file": f"{self.split}/{name}", "samples": int(n)})
        self.samples += n

    def finish(self) -> dict:
        if self.n_rows:
            self._flush(self.n_rows)
        for f in self.files:
            path = os.path.join(os.path.dirname(self.dir), f["file"])
            f["sha256"], f["bytes"] = file_sha256(path), os.path.getsize(path)
        tokens_in_samples = self.samples * self.L
        return {
            "documents": self.documents, "eos_tokens": self.documents, "tokens": self.tokens,
            "text_bytes": self.text_bytes, "samples": self.samples,
            "tokens_in_samples": tokens_in_samples,
            "dropped_tail_tokens": self.tokens - tokens_in_samples,
            "bytes_per_token": (self.text_bytes / self.tokens) if self.tokens else None,
            "max_documents_per_sample": self.max_documents,
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


def tokenizer_sample(files: List[str], cfg: PrepareConfig, cleaner: Optional[str],
                     stats: Optional[ReadStats] = None) -> Iterator[str]:
    """Deterministic, bounded sample of cleaned *training* documents: a document is taken when
    its hash falls in the first ``p`` of the training range, ``p`` from the estimated size.
    Reading problems are counted in ``stats`` (quietly: the packing pass warns about them)."""
    est = sum(uncompressed_size_estimate(f) for f in files)
    p = min(1.0, 1.25 * cfg.tokenizer_sample_bytes / max(est, 1))
    vf = cfg.validation_fraction
    clean = cleaner_fn(cleaner) if cleaner else None
    quiet = stats if stats is not None else ReadStats(quiet=True)
    for doc in iter_documents(files, cfg.format, cfg.text_field, cfg.doc_separator, stats=quiet):
        h = doc_hash(doc)
        if h < vf and vf > 0:
            continue
        if (h - vf) / (1.0 - vf) >= p:
            continue
        text = clean(doc) if clean else doc
        if text:
            yield text


def prepare_dataset(cfg: PrepareConfig, overwrite: bool = False, log=print) -> dict:
    """Build (or reuse) the packed dataset described by ``cfg``. Returns the manifest (with
    ``"output_dir"`` and ``"reused"`` added). Raises ``DataError`` on bad input."""
    if cfg.seq_length < 1:
        raise DataError(f"seq_length must be >= 1, got {cfg.seq_length}")
    if not 0.0 <= cfg.validation_fraction < 1.0:
        raise DataError(f"validation_fraction must be in [0, 1), got {cfg.validation_fraction}")
    if cfg.shard_samples < 1:
        raise DataError("shard_samples must be >= 1")
    if isinstance(cfg.eod_pad_length, bool) or not isinstance(cfg.eod_pad_length, int) or cfg.eod_pad_length < 1:
        raise DataError(f"eod_pad_length (the width of the actual_seq_len column) must be an integer >= 1, "
                        f"got {cfg.eod_pad_length!r}")
    files, cleaner, name = resolve_inputs(cfg)
    sources = [{"path": f, "bytes": os.path.getsize(f), "sha256": file_sha256(f),
                "format": detect_format(f) if cfg.format == "auto" else cfg.format} for f in files]
    tok_sha, vocab_tag = None, cfg.vocab_size
    if cfg.tokenizer_model:
        vocab_tag = load_sentencepiece(cfg.tokenizer_model).get_piece_size()      # also validates it
        tok_sha = file_sha256(cfg.tokenizer_model)
    fingerprint = compute_fingerprint(cfg, sources, cleaner, tok_sha)
    out_dir = os.path.abspath(cfg.output_dir or default_output_dir(name, vocab_tag, cfg.seq_length))

    remove_stale_tmp(out_dir)
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
            if old is not None and int(old.get("format_version", 1)) < FORMAT_VERSION:
                what = (f"a dataset of data format {old.get('format_version', 1)}, prepared before the "
                        f"actual_seq_len column (format {FORMAT_VERSION}); it still trains, as unpacked-attention data")
            raise DataError(f"output directory {out_dir} already holds {what}; choose another "
                            f"--output_dir or pass --overwrite to replace it")

    t_start = time.time()
    # here out_dir is absent, or `overwrite` asked to replace it (checked above)
    with atomic_dir(out_dir, overwrite=True, error=DataError) as tmp_dir:
        manifest = _build(cfg, files, sources, cleaner, name, fingerprint, tmp_dir, log)
        manifest["timing"]["total_seconds"] = round(time.time() - t_start, 3)
        atomic_json(manifest, os.path.join(tmp_dir, MANIFEST))
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
        sample_stats = ReadStats(quiet=True)
        train_tokenizer(tokenizer_sample(files, cfg, cleaner if cleaner != "none" else None, sample_stats),
                        tok_path, vocab_size=cfg.vocab_size, model_type=cfg.tokenizer_type,
                        max_sample_bytes=cfg.tokenizer_sample_bytes)
        check_vocab_size(load_sentencepiece(tok_path).get_piece_size(), cfg.vocab_size, sample_stats)
        trained = True
    t_tok = time.time() - t0
    sp = load_sentencepiece(tok_path)
    if sp.eos_id() != EOS_ID and trained:
        raise DataError("internal: trained tokenizer has an unexpected EOS id")

    L = cfg.seq_length + 1
    packers = {s: SplitPacker(tmp_dir, s, L, cfg.shard_samples, cfg.shuffle, cfg.seed, sp.eos_id(),
                              cfg.eod_pad_length) for s in SPLITS}
    stats = ReadStats()
    est = sum(uncompressed_size_estimate(f) for f in files)
    prog = _Progress(est, cfg.progress)
    raw_bytes = dropped_empty = 0
    t1 = time.time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        docs = iter_documents(files, cfg.format, cfg.text_field, cfg.doc_separator, stats=stats)
        tasks = chunk_documents(docs, cfg.task_chars)
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
        "columns": {"input_ids": [L], ACTUAL_SEQ_LEN: [cfg.eod_pad_length]},
        "eod_pad_length": cfg.eod_pad_length,
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
