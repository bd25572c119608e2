"""The manifest of a prepared dataset: what it was built from, its fingerprint and its shard files.

``manifest.json`` is written last, atomically, into a prepared dataset directory; a directory
without it is not a dataset (an interrupted build). The fingerprint hashes everything that
determines the output (config fields, source file hashes, cleaner, tokenizer), so re-running an
unchanged preparation is a no-op and a changed one is detected.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import List, Optional

from .config import PrepareConfig
from .errors import DataError

# 2: shards hold the actual_seq_len column (document ends per sample, data/documents.py); datasets
#    of version 1 (input_ids only) still train, with attention across document boundaries.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.model"
SPLITS = ("train", "validation")
PAGE_SIZE = 1 << 17     # MindRecord page size (the 32 MB default preallocates 50 MB sparse files)


def read_manifest(dataset_dir: str) -> dict:
    path = os.path.join(dataset_dir, MANIFEST)
    if not os.path.isfile(path):
        raise DataError(f"{dataset_dir}: no {MANIFEST}; not a dataset prepared by run/prepare_data.py "
                        f"(or an interrupted one)")
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


def read_manifest_file(dataset_dir: str) -> Optional[dict]:
    """The manifest of ``dataset_dir``, or None when it has none (not a prepared dataset)."""
    if not os.path.isfile(os.path.join(dataset_dir, MANIFEST)):
        return None
    return read_manifest(dataset_dir)


def compute_fingerprint(cfg: PrepareConfig, sources: List[dict], cleaner: str,
                        tokenizer_sha: Optional[str]) -> str:
    payload = {"format_version": FORMAT_VERSION, "page_size": PAGE_SIZE, "config": cfg.fingerprint_fields(),
               "cleaner": cleaner, "sources": [[s["sha256"], s["bytes"]] for s in sources],
               "tokenizer_sha256": tokenizer_sha}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


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


def has_document_column(manifest: dict) -> bool:
    """Whether the shards of a prepared dataset carry `actual_seq_len` (format 2 onwards)."""
    return "actual_seq_len" in (manifest.get("columns") or {})


def old_format_note(dataset_dir: str, manifest: dict) -> Optional[str]:
    """A line for datasets prepared before the actual_seq_len column (None for current ones)."""
    if has_document_column(manifest):
        return None
    return (f"note: {dataset_dir} was prepared with data format {manifest.get('format_version', 1)} (no "
            f"actual_seq_len column): it trains as before, with attention across document boundaries; "
            f"prepare it again (--overwrite) to train with document masking")
