"""A prepared dataset is checked against its manifest: shards, tokenizer, corpus; a tokenizer that
comes out smaller than configured stops preparation, naming the cause."""
import json
import os
import random
import shutil

import pytest

from bitcpm_ms.data import PrepareConfig, prepare_dataset
from bitcpm_ms.data.integrity import CACHE_FILE, stale_sources, verify_dataset
from bitcpm_ms.errors import DataError

from .corpora import english_doc


@pytest.fixture
def dataset(small_dataset, tmp_path):
    out, man, cfg, docs = small_dataset
    copy = tmp_path / "ds"
    shutil.copytree(out, copy)
    return copy, man


def _shard(copy, man, i=0):
    return copy / man["splits"]["train"]["files"][i]["file"]


def test_intact_dataset_verifies_once_then_from_the_cache(dataset, monkeypatch):
    copy, man = dataset
    n = verify_dataset(str(copy))
    assert n == len(man["splits"]["train"]["files"]) + len(man["splits"]["validation"]["files"]) + 1
    cache = json.load(open(copy / CACHE_FILE))
    assert all(v["sha256"] for v in cache.values())
    import bitcpm_ms.data.integrity as integrity
    monkeypatch.setattr(integrity, "file_sha256", lambda p: pytest.fail(f"re-hashed {p}"))
    verify_dataset(str(copy))                               # size + mtime unchanged: no hashing


@pytest.mark.parametrize("damage, match", [
    ("truncate", r"train shard .*shard_00000.mindrecord has [\d,]+ bytes, the manifest records"),
    ("flip", r"train shard .*shard_00000.mindrecord is corrupt or was modified: sha256"),
    ("missing", r"train shard .*shard_00000.mindrecord listed in .*manifest.json is missing"),
    ("tokenizer", r"tokenizer .*tokenizer.model is corrupt or was modified")])
def test_a_damaged_file_is_named(dataset, damage, match):
    copy, man = dataset
    verify_dataset(str(copy))                                # cached as good first
    shard = _shard(copy, man)
    if damage == "truncate":
        os.truncate(shard, os.path.getsize(shard) - 100)
    elif damage == "flip":
        with open(shard, "r+b") as f:
            f.seek(os.path.getsize(shard) // 2)
            f.write(b"\x00\x01\x02\x03")
    elif damage == "missing":
        os.remove(shard)
    else:
        with open(copy / "tokenizer.model", "ab") as f:
            f.write(b"\x00")
        os.utime(copy / "tokenizer.model", ns=(1, 1))
    with pytest.raises(DataError, match=match):
        verify_dataset(str(copy))


def test_force_rehashes_a_file_changed_in_place_with_its_mtime_kept(dataset):
    copy, man = dataset
    verify_dataset(str(copy))
    shard = _shard(copy, man)
    st = os.stat(shard)
    with open(shard, "r+b") as f:                            # same size, same mtime: the cache trusts it
        f.seek(st.st_size // 2)
        f.write(b"\xff\xfe")
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    verify_dataset(str(copy))
    with pytest.raises(DataError, match="is corrupt"):
        verify_dataset(str(copy), force=True)               # --verify_data


def test_a_changed_corpus_is_detected(tmp_path, corpus_dir):
    d, docs = corpus_dir
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(docs[:300]) + "\n", encoding="utf-8")
    out = tmp_path / "ds"
    prepare_dataset(PrepareConfig(input=str(corpus), output_dir=str(out), vocab_size=512, seq_length=32,
                                  validation_fraction=0.1, num_workers=0, progress=False), log=lambda m: None)
    assert stale_sources(str(out)) == []
    with open(corpus, "a", encoding="utf-8") as f:
        f.write("\n\nOne more document.\n")
    assert any(str(corpus) in c and "bytes" in c for c in stale_sources(str(out)))


def _latin1_corpus(path, n_docs=400):
    rng = random.Random(5)
    accents = ["café", "naïve", "façade", "señor", "Müller", "crème", "über", "élan", "déjà", "piñata"]
    docs = [english_doc(rng) + " " + " ".join(rng.choice(accents) for _ in range(5)) for _ in range(n_docs)]
    path.write_bytes("\n\n".join(docs).encode("latin-1"))


def test_a_latin1_corpus_stops_preparation_naming_the_encoding(tmp_path):
    corpus = tmp_path / "latin1.txt"
    _latin1_corpus(corpus)
    cfg = PrepareConfig(input=str(corpus), output_dir=str(tmp_path / "ds"), vocab_size=4096, seq_length=32,
                        validation_fraction=0.1, num_workers=0, progress=False)
    with pytest.raises(DataError, match=r"fewer than vocab_size 4096: the corpus is not UTF-8 \([\d,]+ invalid "
                                        r"UTF-8 bytes.*latin1.txt\); convert it first"):
        prepare_dataset(cfg, log=lambda m: None)
    assert not (tmp_path / "ds").exists()                   # nothing half-written


def test_a_too_small_utf8_sample_names_the_vocabulary(tmp_path, corpus_dir):
    d, docs = corpus_dir
    corpus = tmp_path / "small.txt"
    corpus.write_text("\n\n".join(docs[:40]), encoding="utf-8")
    cfg = PrepareConfig(input=str(corpus), output_dir=str(tmp_path / "ds"), vocab_size=8192, seq_length=16,
                        validation_fraction=0.1, num_workers=0, progress=False)
    with pytest.raises(DataError, match=r"fewer than vocab_size 8192: the corpus sample has too few distinct"):
        prepare_dataset(cfg, log=lambda m: None)
