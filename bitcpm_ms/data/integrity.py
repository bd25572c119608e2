"""Is a prepared dataset still what its manifest says? Shards, tokenizer and source corpus.

The manifest records the sha256 of every MindRecord shard and of the tokenizer, and of every
source file it was built from. `verify_dataset` checks the files a run is about to read against
it: a missing shard, a shard cut short by a full disk or a bad copy, or a changed one is a
`DataError` that names the file, instead of MindSpore's "Failed to read file." in the middle of
training (or, worse, training on silently fewer samples). Hashing gigabytes on every run would
cost minutes, so a result is remembered in `DATASET/.verified.json`, keyed by each file's size
and modification time: a file that has not been touched since it was verified is not read again
(`force=True`, i.e. `--verify_data`, re-reads everything). `stale_sources` does the same for the
corpus files: a corpus edited after preparation means the dataset no longer matches the config.
"""
from __future__ import annotations

import json
import os
import socket
from typing import Dict, List, Optional

from ..fileio import atomic_json
from .errors import DataError
from .manifest import SPLITS, TOKENIZER_FILE, read_manifest
from .tokenizer import file_sha256

CACHE_FILE = ".verified.json"


def _load_cache(dataset_dir: str) -> Dict[str, dict]:
    try:
        with open(os.path.join(dataset_dir, CACHE_FILE), encoding="utf-8") as f:
            cache = json.load(f)
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(dataset_dir: str, cache: Dict[str, dict]) -> None:
    """Atomically, under a temporary name unique across hosts: under msrun one rank per node
    verifies (`parallel.once_per_node`), and nodes sharing the dataset directory may write at
    once (containers on two nodes can have the same pid). The last writer wins; the writers
    verified the same files, so at worst an entry is missing and that file is hashed again."""
    path = os.path.join(dataset_dir, CACHE_FILE)
    try:
        atomic_json(cache, path, indent=1, tmp=f"{path}.tmp-{socket.gethostname()}-{os.getpid()}")
    except OSError:
        pass          # a read-only dataset is verified again next time


def _stat_key(path: str) -> dict:
    st = os.stat(path)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _matches(path: str, sha256: str, cache: Dict[str, dict], key: str, force: bool, tick=None) -> Optional[str]:
    """None when `path` has `sha256` (from the cache when size and mtime are unchanged), else its sha256."""
    stat = _stat_key(path)
    hit = cache.get(key)
    if not force and hit and hit.get("sha256") == sha256 and all(hit.get(k) == v for k, v in stat.items()):
        return None
    actual = file_sha256(path, tick)
    if actual != sha256:
        return actual
    cache[key] = dict(stat, sha256=sha256)
    return None


def verify_dataset(dataset_dir: str, splits=SPLITS, force: bool = False, tokenizer: bool = True,
                   tick=None) -> int:
    """Check the shards of `splits` (and the tokenizer) of a prepared dataset against its manifest.
    Returns the number of files checked; raises DataError naming the first bad file. `tick()` is
    called while hashing (`parallel.once_per_node`)."""
    man = read_manifest(dataset_dir)
    wanted = []
    for split in splits:
        for entry in man["splits"][split]["files"]:
            wanted.append((entry["file"], entry.get("sha256"), entry.get("bytes"), f"{split} shard"))
    if tokenizer and (man.get("tokenizer") or {}).get("sha256"):
        wanted.append((man["tokenizer"].get("file", TOKENIZER_FILE), man["tokenizer"]["sha256"], None, "tokenizer"))
    cache = _load_cache(dataset_dir)
    fix = (f"prepare it again: python3 run/prepare_data.py --config CONFIG --output_dir {dataset_dir} "
           "--overwrite")
    for rel, sha, size, what in wanted:
        path = os.path.join(dataset_dir, rel)
        if not os.path.isfile(path):
            raise DataError(f"{what} {path} listed in {dataset_dir}/manifest.json is missing; {fix}")
        if not sha:
            continue
        actual_size = os.path.getsize(path)
        if size is not None and actual_size != int(size):
            raise DataError(f"{what} {path} has {actual_size:,} bytes, the manifest records {int(size):,} "
                            f"(truncated or replaced); {fix}")
        actual = _matches(path, sha, cache, rel, force, tick)
        if actual is not None:
            raise DataError(f"{what} {path} is corrupt or was modified: sha256 {actual[:12]}... does not match "
                            f"the manifest ({sha[:12]}...); {fix}")
    _save_cache(dataset_dir, cache)
    return len(wanted)


def stale_sources(dataset_dir: str, tick=None) -> List[str]:
    """Source corpus files that changed (size or sha256) since the dataset was prepared; a source
    that no longer exists is not reported (a prepared dataset does not need its corpus)."""
    man = read_manifest(dataset_dir)
    cache = _load_cache(dataset_dir)
    changed = []
    for src in man.get("sources") or []:
        path = src.get("path")
        if not path or not os.path.isfile(path) or not src.get("sha256"):
            continue
        if os.path.getsize(path) != int(src.get("bytes", -1)):
            changed.append(f"{path} ({os.path.getsize(path):,} bytes, the manifest records {int(src['bytes']):,})")
            continue
        actual = _matches(path, src["sha256"], cache, "source:" + os.path.abspath(path), False, tick)
        if actual is not None:
            changed.append(f"{path} (sha256 {actual[:12]}..., the manifest records {src['sha256'][:12]}...)")
    _save_cache(dataset_dir, cache)
    return changed
