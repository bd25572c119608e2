"""Corpus sources: which files a path spec names, what format each is, how to open it.

Files, directories (searched recursively) and glob patterns expand to a sorted, de-duplicated
file list; the format is detected from dictd index files, suffixes and magic bytes; gzip and
dictzip compression are detected from magic bytes. The readers (``readers.py``) stream documents
out of these files.
"""
from __future__ import annotations

import glob as _glob
import gzip
import os
from typing import List, Optional, Sequence, Union

from .errors import DataError

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
COMPRESSED_SUFFIXES = (".gz", ".dz", ".gzip")
FORMATS = ("auto", "text", "jsonl", "parquet", "dictd")


def resolve_paths(spec: Union[str, os.PathLike, Sequence]) -> List[str]:
    """Expand files, directories (recursive, sorted) and glob patterns into a sorted,
    de-duplicated file list. Raises ``DataError`` for a path that matches nothing."""
    if spec is None:
        raise DataError("no corpus input given")
    items = [spec] if isinstance(spec, (str, os.PathLike)) else list(spec)
    if not items:
        raise DataError("no corpus input given (empty list)")
    out: List[str] = []
    for item in items:
        item = os.path.expanduser(os.fspath(item))
        if any(ch in item for ch in "*?["):
            matches = sorted(p for p in _glob.glob(item, recursive=True) if os.path.isfile(p))
            if not matches:
                raise DataError(f"glob pattern {item!r} matches no file")
            out.extend(matches)
        elif os.path.isdir(item):
            found = []
            for root, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                found.extend(os.path.join(root, f) for f in files if not f.startswith("."))
            # a dictd dictionary inside a directory: read the .dict, not the .index
            found = [f for f in found if not (f.endswith(".index") and _dictd_dict_for_index(f))]
            if not found:
                raise DataError(f"directory {item!r} contains no files")
            out.extend(sorted(found))
        elif os.path.isfile(item):
            out.append(item)
        else:
            raise DataError(f"corpus path {item!r} does not exist")
    seen, result = set(), []
    for p in out:
        a = os.path.abspath(p)
        if a not in seen:
            seen.add(a)
            result.append(a)
    return result


def _dictd_dict_for_index(index_path: str) -> Optional[str]:
    base = index_path[: -len(".index")]
    for cand in (base + ".dict.dz", base + ".dict"):
        if os.path.isfile(cand):
            return cand
    return None


def dictd_index_for(path: str) -> Optional[str]:
    """``X.index`` for ``X.dict`` / ``X.dict.dz`` if it exists."""
    for suf in (".dict.dz", ".dict"):
        if path.endswith(suf):
            idx = path[: -len(suf)] + ".index"
            return idx if os.path.isfile(idx) else None
    return None


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _strip_compression(name: str) -> str:
    for suf in COMPRESSED_SUFFIXES:
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def detect_format(path: str) -> str:
    if dictd_index_for(path):
        return "dictd"
    name = _strip_compression(path.lower())
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"PAR1":
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return "text"


def open_binary(path: str):
    """Open a possibly gzip/dictzip-compressed file for streaming binary reads."""
    if is_gzip(path):
        return gzip.open(path, "rb")
    return open(path, "rb")


def uncompressed_size_estimate(path: str) -> int:
    """Uncompressed size of a file (gzip ISIZE field, mod 2**32, for compressed files)."""
    size = os.path.getsize(path)
    if is_gzip(path) and size >= 18:
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
        while isize < size:          # ISIZE wraps at 4 GiB
            isize += 1 << 32
        return isize
    return size
