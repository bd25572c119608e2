import gzip
import json

import pytest

from bitcpm_ms.data import readers
from bitcpm_ms.data.errors import DataError, DataWarning
from bitcpm_ms.data.readers import ReadStats, iter_documents, resolve_paths

from .corpora import mixed_docs


def _docs(path, **kw):
    return list(iter_documents(str(path), **kw))


def test_plain_text_blank_line_separator(tmp_path):
    docs = mixed_docs(50, seed=2)
    p = tmp_path / "c.txt"
    # separators: one or several blank lines, blank lines holding spaces
    seps = ["\n\n", "\n\n\n", "\n   \n", "\n\t\n\n"]
    p.write_text("".join(d + seps[i % 4] for i, d in enumerate(docs)), encoding="utf-8")
    assert _docs(p) == docs


def test_text_chunk_border_independent(tmp_path, monkeypatch):
    docs = mixed_docs(80, seed=3)
    p = tmp_path / "c.txt"
    p.write_text("\n\n\n".join(docs), encoding="utf-8")
    ref = _docs(p)
    for chunk in (7, 64, 333):
        monkeypatch.setattr(readers, "CHUNK_BYTES", chunk)
        assert _docs(p) == ref == docs


def test_custom_separator_and_whole_file(tmp_path):
    p = tmp_path / "lines.txt"
    p.write_text("one\ntwo\n\nthree\n", encoding="utf-8")
    assert _docs(p, doc_separator="\n") == ["one", "two", "three"]
    assert _docs(p, doc_separator=None) == ["one\ntwo\n\nthree\n"]
    q = tmp_path / "marked.txt"
    q.write_text("a<|doc|>b b<|doc|><|doc|>c", encoding="utf-8")
    assert _docs(q, doc_separator="<|doc|>") == ["a", "b b", "c"]


def test_jsonl_field_nested_and_bad_lines(tmp_path):
    p = tmp_path / "c.jsonl"
    lines = [json.dumps({"text": "first doc", "id": 1}), "not json {", json.dumps({"other": 1}),
             json.dumps({"text": "中文 second"}), "", json.dumps({"text": None})]
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    st = ReadStats()
    with pytest.warns(DataWarning, match="c.jsonl"):
        assert list(iter_documents(str(p), stats=st)) == ["first doc", "中文 second"]
    assert st.bad_records == 3
    q = tmp_path / "n.jsonl"
    q.write_text(json.dumps({"meta": {"body": "deep"}}) + "\n", encoding="utf-8")
    assert _docs(q, text_field="meta.body") == ["deep"]


def test_parquet_streamed_by_batches(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    docs = mixed_docs(3000, seed=4)
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"content": docs, "n": list(range(len(docs)))}), p, row_group_size=500)
    assert _docs(p, text_field="content") == docs
    with pytest.raises(DataError, match="no column 'text'"):
        _docs(p)


def test_gzip_and_dictzip_suffixes(tmp_path):
    docs = mixed_docs(40, seed=5)
    body = "\n\n".join(docs).encode()
    for name in ("c.txt.gz", "c.dz", "c_no_suffix"):
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(body)
        assert _docs(tmp_path / name) == docs
    with gzip.open(tmp_path / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}) + "\n")
    assert _docs(tmp_path / "c.jsonl.gz") == docs


def test_directories_and_globs(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "a.txt").write_text("A1\n\nA2", encoding="utf-8")
    (tmp_path / "sub" / "deeper" / "b.jsonl").write_text('{"text": "B1"}\n', encoding="utf-8")
    (tmp_path / "sub" / ".hidden").write_text("H", encoding="utf-8")
    assert _docs(tmp_path / "sub") == ["A1", "A2", "B1"]
    assert _docs(str(tmp_path / "sub" / "**" / "*.jsonl")) == ["B1"]
    files = resolve_paths([str(tmp_path / "sub"), str(tmp_path / "sub" / "a.txt")])
    assert len(files) == 2                                   # de-duplicated


def test_missing_empty_binary(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _docs(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="matches no file"):
        _docs(str(tmp_path / "*.nothing"))
    (tmp_path / "empty.txt").write_text("\n\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty.txt"):
        _docs(tmp_path / "empty.txt")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(DataError, match="blob.bin.*not a text file"):
        _docs(tmp_path / "blob.bin")


def test_invalid_utf8_replaced_counted_warned(tmp_path):
    p = tmp_path / "bad.txt"
    p.write_bytes("good café\n\n".encode() + b"bad \xff\xfe bytes \x92 here\n\n" + "中文".encode()[:-1])
    st = ReadStats()
    with pytest.warns(DataWarning, match="bad.txt: 5 invalid UTF-8"):
        docs = list(iter_documents(str(p), stats=st))
    # 5 bytes: ff, fe, 92 and the 2-byte truncated tail (one U+FFFD)
    assert docs == ["good café", "bad \ufffd\ufffd bytes \ufffd here", "中\ufffd"]
    assert st.invalid_utf8 == 5 and st.files_with_invalid_utf8 == [str(p)]


def _b64(n):
    alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    s = ""
    while True:
        s = alpha[n % 64] + s
        n //= 64
        if n == 0:
            return s


def test_dictd_reader(tmp_path):
    entries = ["00-database-info\n   info text\n",
               "Apple \\Ap\"ple\\, n.\n   A fruit.\n   [1913 Webster]\n",
               "Banana \\Ba*na\"na\\, n.\n   Another {fruit}.\n   [WordNet 1.5]\n"]
    body, index = b"", []
    for e in entries:
        raw = e.encode()
        index.append((e.split()[0], len(body), len(raw)))
        body += raw + b"\n"
    with gzip.open(tmp_path / "mini.dict.dz", "wb") as f:
        f.write(body)
    (tmp_path / "mini.index").write_text(
        "".join(f"{w}\t{_b64(o)}\t{_b64(l)}\n" for w, o, l in sorted(index) + [("apple", index[1][1], index[1][2])]))
    docs = _docs(tmp_path / "mini.dict.dz")
    assert docs == entries[1:]                      # metadata entry skipped, alias de-duplicated
    assert _docs(tmp_path) == entries[1:]           # directory: the .index is not read as text
