"""Streaming corpus readers.

Every reader yields documents (``str``) one at a time and never holds more than one read
chunk (``CHUNK_BYTES``) plus one document in memory, so corpora of any size stream through.

Supported inputs (single files, directories searched recursively, glob patterns, or lists of
those):

* plain text (``.txt`` and anything not recognised otherwise): documents are separated by
  ``doc_separator``. The default ``"\\n\\n"`` means "one or more blank lines" (lines holding
  only spaces/tabs count as blank). Any other non-empty string is a literal separator (``"\\n"``:
  one document per line). ``None`` or ``""``: the whole file is one document.
* JSON Lines (``.jsonl``, ``.json``, ``.ndjson``): one JSON object per line, the text is in
  ``text_field`` (dots address nested keys: ``"meta.text"``). Malformed lines are skipped,
  counted and warned about.
* Parquet (``.parquet``, ``.pq``): column ``text_field``, streamed batch by batch with pyarrow.
* dictd dictionaries (``X.dict`` / ``X.dict.dz`` with ``X.index`` beside it, e.g. the Debian
  ``dict-gcide`` package): one document per dictionary entry, in file order.
* gzip-compressed versions of the text formats (``.gz``; dictzip ``.dz`` is gzip-compatible);
  compression is detected from the magic bytes, not only the suffix.

Invalid UTF-8 is replaced with U+FFFD, counted in ``ReadStats.invalid_utf8`` and warned about
once per file, never fatal. A file whose first 8 KiB (after decompression) contains NUL bytes is
rejected as binary with a ``DataError`` naming it.
"""
from __future__ import annotations

import codecs
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Iterator, List, Optional

from .errors import DataError, DataWarning
from .sources import FORMATS, detect_format, dictd_index_for, open_binary, resolve_paths  # noqa: F401

CHUNK_BYTES = 1 << 20
MAX_DOC_CHARS = 4 << 20          # longer "documents" are cut into pieces of this many chars

_COUNTER = {"n": 0}


def _count_replace(exc):
    if isinstance(exc, UnicodeDecodeError):
        _COUNTER["n"] += exc.end - exc.start
        return "\ufffd", exc.end
    raise exc


codecs.register_error("bitcpm_count_replace", _count_replace)


@dataclass
class ReadStats:
    """Counters filled while reading (per corpus, summed over files)."""
    files: List[str] = field(default_factory=list)
    documents: int = 0
    empty_documents: int = 0
    invalid_utf8: int = 0          # number of undecodable bytes replaced by U+FFFD
    bad_records: int = 0           # malformed JSON lines / missing text fields / null values
    files_with_invalid_utf8: List[str] = field(default_factory=list)
    quiet: bool = False            # count only, do not emit DataWarnings


def _warn(stats: ReadStats, msg: str):
    if not stats.quiet:
        warnings.warn(msg, DataWarning, stacklevel=4)


# --------------------------------------------------------------------------- decoding
class _Decoder:
    """Incremental UTF-8 decoder that replaces and counts invalid bytes."""

    def __init__(self, path: str, stats: ReadStats):
        self.path, self.stats = path, stats
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="bitcpm_count_replace")
        self.bad = 0
        self.first = True

    def decode(self, data: bytes, final: bool = False) -> str:
        if self.first:
            self.first = False
            if b"\x00" in data[:8192]:
                raise DataError(f"{self.path}: not a text file (NUL bytes in the first 8 KiB); "
                                f"binary files cannot be used as corpus")
            if data.startswith(codecs.BOM_UTF8):
                data = data[3:]
        before = _COUNTER["n"]
        text = self.dec.decode(data, final)
        self.bad += _COUNTER["n"] - before
        return text

    def close(self):
        if self.bad:
            self.stats.invalid_utf8 += self.bad
            self.stats.files_with_invalid_utf8.append(self.path)
            _warn(self.stats, f"{self.path}: {self.bad} invalid UTF-8 byte(s) replaced by U+FFFD")


def _iter_text_chunks(path: str, stats: ReadStats) -> Iterator[str]:
    dec = _Decoder(path, stats)
    try:            # count invalid bytes also when the reader stops early (a bounded sample)
        with open_binary(path) as f:
            while True:
                try:
                    data = f.read(CHUNK_BYTES)
                except (OSError, EOFError) as exc:
                    raise DataError(f"{path}: cannot read ({exc})") from exc
                if not data:
                    break
                text = dec.decode(data)
                if text:
                    yield text
            tail = dec.decode(b"", final=True)
            if tail:
                yield tail
    finally:
        dec.close()


_BLANK_LINES = re.compile(r"\n[ \t\r]*\n(?:[ \t\r]*\n)*")
_LEADING_BLANK = re.compile(r"^(?:[ \t\r]*\n)+")


def _split_long(doc: str) -> Iterator[str]:
    for i in range(0, len(doc), MAX_DOC_CHARS):
        yield doc[i: i + MAX_DOC_CHARS]


def iter_text_file(path: str, stats: ReadStats, doc_separator: Optional[str] = "\n\n") -> Iterator[str]:
    if not doc_separator:
        buf: List[str] = []
        size = 0
        for chunk in _iter_text_chunks(path, stats):
            buf.append(chunk)
            size += len(chunk)
            if size >= MAX_DOC_CHARS:
                joined = "".join(buf)
                yield joined[:MAX_DOC_CHARS]
                buf, size = [joined[MAX_DOC_CHARS:]], len(joined) - MAX_DOC_CHARS
        if buf:
            yield "".join(buf)
        return
    blank_mode = doc_separator == "\n\n"
    splitter = _BLANK_LINES if blank_mode else re.compile(re.escape(doc_separator))
    rest = ""
    for chunk in _iter_text_chunks(path, stats):
        rest += chunk
        parts = splitter.split(rest)
        rest = parts.pop()
        for part in parts:
            yield _tidy(part) if blank_mode else part
        if len(rest) > MAX_DOC_CHARS:
            yield rest[:MAX_DOC_CHARS]
            rest = rest[MAX_DOC_CHARS:]
    if rest:
        yield _tidy(rest) if blank_mode else rest


def _tidy(doc: str) -> str:
    """Blank-line mode: a separator can straddle a read-chunk border, so drop leading blank
    lines and trailing newlines; documents are then independent of the chunking."""
    return _LEADING_BLANK.sub("", doc).rstrip("\r\n")


def _get_field(obj, text_field: str):
    cur = obj
    for key in text_field.split("."):
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def iter_jsonl_file(path: str, stats: ReadStats, text_field: str = "text") -> Iterator[str]:
    rest = ""
    bad_before = stats.bad_records
    lineno = 0

    def handle(line: str):
        nonlocal lineno
        lineno += 1
        if not line.strip():
            return None
        try:
            obj = json.loads(line)
        except ValueError:
            stats.bad_records += 1
            return None
        val = _get_field(obj, text_field)
        if not isinstance(val, str):
            stats.bad_records += 1
            return None
        return val

    for chunk in _iter_text_chunks(path, stats):
        rest += chunk
        lines = rest.split("\n")
        rest = lines.pop()
        for line in lines:
            val = handle(line)
            if val is not None:
                yield from _split_long(val)
    if rest:
        val = handle(rest)
        if val is not None:
            yield from _split_long(val)
    if stats.bad_records > bad_before:
        _warn(stats, f"{path}: skipped {stats.bad_records - bad_before} line(s) that are not JSON "
                     f"objects with a string field {text_field!r}")


def iter_parquet_file(path: str, stats: ReadStats, text_field: str = "text",
                      batch_size: int = 1024) -> Iterator[str]:
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"{path}: Parquet file has no column {text_field!r} "
                        f"(columns: {pf.schema_arrow.names})")
    for batch in pf.iter_batches(batch_size=batch_size, columns=[text_field]):
        for val in batch.column(0).to_pylist():
            if isinstance(val, bytes):
                before = _COUNTER["n"]
                val = val.decode("utf-8", errors="bitcpm_count_replace")
                stats.invalid_utf8 += _COUNTER["n"] - before
            if not isinstance(val, str):
                stats.bad_records += 1
                continue
            yield from _split_long(val)


_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _b64num(s: str) -> int:
    v = 0
    for ch in s:
        v = v * 64 + _B64[ch]
    return v


def dictd_entries(index_path: str):
    """Sorted, de-duplicated (offset, length) pairs of a dictd index (memory: the index only)."""
    pairs = set()
    with open(index_path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3:
                continue
            try:
                pairs.add((_b64num(parts[1]), _b64num(parts[2])))
            except KeyError:
                continue
    return sorted(pairs)


def iter_dictd_file(path: str, stats: ReadStats, skip_info_entries: bool = True) -> Iterator[str]:
    """One document per dictd entry, streamed in file order (entries that overlap an earlier
    one are skipped)."""
    index_path = dictd_index_for(path)
    if index_path is None:
        raise DataError(f"{path}: dictd dictionary without its .index file")
    entries = dictd_entries(index_path)
    dec_stats = stats
    bad_here = 0
    pos = 0
    with open_binary(path) as f:
        first = True
        for off, length in entries:
            if off < pos:
                continue
            if off > pos:
                f.read(off - pos)
            data = f.read(length)
            pos = off + len(data)
            if first:
                first = False
                if b"\x00" in data[:8192]:
                    raise DataError(f"{path}: not a text file (NUL bytes)")
            before = _COUNTER["n"]
            text = data.decode("utf-8", errors="bitcpm_count_replace")
            bad = _COUNTER["n"] - before
            if bad:
                bad_here += bad
                dec_stats.invalid_utf8 += bad
                if path not in dec_stats.files_with_invalid_utf8:
                    dec_stats.files_with_invalid_utf8.append(path)
            if skip_info_entries and text.startswith("00-"):
                continue     # dictd metadata entries (00-database-info, ...)
            yield text
    if bad_here:
        _warn(stats, f"{path}: {bad_here} invalid UTF-8 byte(s) replaced by U+FFFD")


def iter_file_documents(path: str, stats: ReadStats, fmt: str = "auto", text_field: str = "text",
                        doc_separator: Optional[str] = "\n\n") -> Iterator[str]:
    """Documents of one file (no cleaning, empty documents dropped)."""
    if fmt not in FORMATS:
        raise DataError(f"unknown corpus format {fmt!r} (one of {FORMATS})")
    if not os.path.isfile(path):
        raise DataError(f"corpus file {path!r} does not exist")
    f = detect_format(path) if fmt == "auto" else fmt
    stats.files.append(path)
    if f == "parquet":
        it = iter_parquet_file(path, stats, text_field)
    elif f == "jsonl":
        it = iter_jsonl_file(path, stats, text_field)
    elif f == "dictd":
        it = iter_dictd_file(path, stats)
    else:
        it = iter_text_file(path, stats, doc_separator)
    for doc in it:
        if doc.strip():
            stats.documents += 1
            yield doc
        else:
            stats.empty_documents += 1


def iter_documents(paths, fmt: str = "auto", text_field: str = "text",
                   doc_separator: Optional[str] = "\n\n", stats: Optional[ReadStats] = None,
                   require_documents: bool = True) -> Iterator[str]:
    """Stream the documents of a corpus (files / dirs / globs, see module doc).

    Raises ``DataError`` if a path is missing, a file is binary or (``require_documents``) the
    whole corpus holds no non-empty document."""
    stats = stats if stats is not None else ReadStats()
    files = resolve_paths(paths)
    n0 = stats.documents
    for path in files:
        yield from iter_file_documents(path, stats, fmt, text_field, doc_separator)
    if require_documents and stats.documents == n0:
        raise DataError(f"corpus is empty: no non-empty document in {', '.join(files)}")
