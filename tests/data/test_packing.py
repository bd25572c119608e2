import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bitcpm_ms.data import packing
from bitcpm_ms.data.errors import DataError, DataWarning
from bitcpm_ms.data.config import PrepareConfig
from bitcpm_ms.data.manifest import read_manifest
from bitcpm_ms.data.packing import prepare_dataset
from bitcpm_ms.data.tasks import is_validation
from bitcpm_ms.data.tokenizer import EOS_ID, SPTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read_rows(path):
    from mindspore.mindrecord import FileReader
    r = FileReader(path)
    rows = [np.asarray(x["input_ids"]) for x in r.get_next()]
    r.close()
    return np.stack(rows) if rows else np.empty((0, 0), np.int32)


def split_rows(out, man, split):
    return [read_rows(os.path.join(out, f["file"])) for f in man["splits"][split]["files"]]


def expected_streams(docs, tok, frac):
    streams = {"train": [], "validation": []}
    for d in docs:
        s = "validation" if is_validation(d, frac) else "train"
        streams[s].extend(tok.encode(d) + [EOS_ID])
    return {k: np.asarray(v, np.int32) for k, v in streams.items()}


def test_exact_packing_arithmetic(small_dataset):
    out, man, cfg, docs = small_dataset
    L = cfg.seq_length + 1
    tok = SPTokenizer(os.path.join(out, "tokenizer.model"))
    exp = expected_streams(docs, tok, cfg.validation_fraction)
    n_docs = {"train": 0, "validation": 0}
    for d in docs:
        n_docs["validation" if is_validation(d, cfg.validation_fraction) else "train"] += 1
    assert n_docs["validation"] > 0 and n_docs["train"] > 0
    for split in ("train", "validation"):
        sm = man["splits"][split]
        stream = exp[split]
        assert sm["tokens"] == len(stream)
        assert sm["documents"] == sm["eos_tokens"] == n_docs[split] == int((stream == EOS_ID).sum())
        assert sm["samples"] == len(stream) // L
        assert sm["dropped_tail_tokens"] == len(stream) % L
        rows = np.concatenate(split_rows(out, man, split))       # shuffle=False: corpus order
        assert rows.shape == (sm["samples"], L) and rows.dtype == np.int32
        np.testing.assert_array_equal(rows.reshape(-1), stream[: sm["samples"] * L])
        assert sm["text_bytes"] == sum(len(d.encode()) for d in docs
                                       if is_validation(d, cfg.validation_fraction) == (split == "validation"))
    assert man["splits"]["train"]["files"][0]["samples"] == cfg.shard_samples
    assert man["vocab_size"] == 512 and man["seq_length"] == 32 and man["sample_length"] == 33
    assert man["tokenizer"]["eos_id"] == 2 and man["tokenizer"]["pad_id"] == 0
    src = man["sources"]
    assert [os.path.basename(s["path"]) for s in src] == ["a.txt", "b.txt"]
    assert all(len(s["sha256"]) == 64 and s["bytes"] > 0 for s in src)


def test_shuffle_within_shards_and_worker_independence(small_dataset, tmp_path):
    out, man, cfg, docs = small_dataset
    shuffled = PrepareConfig(**{**cfg.__dict__, "shuffle": True, "output_dir": str(tmp_path / "s0")})
    m0 = prepare_dataset(shuffled, log=lambda m: None)
    base = split_rows(out, man, "train")
    mixed = split_rows(str(tmp_path / "s0"), m0, "train")
    assert len(base) == len(mixed) > 1
    for a, b in zip(base, mixed):               # same multiset of rows per shard, other order
        assert sorted(map(bytes, a)) == sorted(map(bytes, b))
    assert any(not np.array_equal(a, b) for a, b in zip(base, mixed))
    # two spawned worker processes give byte-identical shards, same fingerprint
    two = PrepareConfig(**{**shuffled.__dict__, "num_workers": 2, "task_chars": 2000,
                           "output_dir": str(tmp_path / "s2")})
    m2 = prepare_dataset(two, log=lambda m: None)
    assert m2["fingerprint"] == m0["fingerprint"]
    sha = lambda m: [f["sha256"] for s in ("train", "validation") for f in m["splits"][s]["files"]]
    assert sha(m2) == sha(m0)
    assert m2["tokenizer"]["sha256"] == m0["tokenizer"]["sha256"]


def test_rerun_noop_conflict_overwrite(small_dataset, tmp_path):
    out, man, cfg, docs = small_dataset
    again = prepare_dataset(cfg, log=lambda m: None)
    assert again["reused"] and again["fingerprint"] == man["fingerprint"]
    other = PrepareConfig(**{**cfg.__dict__, "seq_length": 16})
    with pytest.raises(DataError, match="different configuration.*--overwrite"):
        prepare_dataset(other, log=lambda m: None)
    assert read_manifest(str(out))["seq_length"] == 32               # untouched
    # overwrite on a copy (the session fixture stays intact)
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    m = prepare_dataset(PrepareConfig(**{**other.__dict__, "output_dir": str(copy)}), overwrite=True,
                        log=lambda m: None)
    assert not m["reused"] and read_manifest(str(copy))["seq_length"] == 16
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_interrupted_run_leaves_nothing(small_dataset, tmp_path, monkeypatch):
    out, man, cfg, docs = small_dataset
    target = tmp_path / "ds"
    calls = {"n": 0}
    real = packing.write_shard

    def failing(path, rows, ends):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("simulated interrupt")
        real(path, rows, ends)

    monkeypatch.setattr(packing, "write_shard", failing)
    c = PrepareConfig(**{**cfg.__dict__, "output_dir": str(target)})
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(c, log=lambda m: None)
    assert os.listdir(tmp_path) == []                       # no dataset, no temp dir
    # a stale temp dir of a dead process (killed -9) is removed by the next run
    stale = tmp_path / "ds.tmp-999999999"
    (stale / "train").mkdir(parents=True)
    monkeypatch.setattr(packing, "write_shard", real)
    m = prepare_dataset(c, log=lambda m: None)
    assert not stale.exists() and m["fingerprint"] == man["fingerprint"]
    # a directory without manifest is not mistaken for a dataset
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x").write_text("x")
    with pytest.raises(DataError, match="not a complete dataset"):
        prepare_dataset(PrepareConfig(**{**cfg.__dict__, "output_dir": str(junk)}), log=lambda m: None)


def test_too_small_and_bad_inputs(tmp_path, small_dataset):
    out, man, cfg, docs = small_dataset
    tokm = os.path.join(out, "tokenizer.model")
    (tmp_path / "tiny.txt").write_text("just a few words\n\nand another", encoding="utf-8")
    base = dict(tokenizer_model=tokm, seq_length=256, num_workers=0, progress=False,
                output_dir=str(tmp_path / "o"))
    with pytest.raises(DataError, match="tiny.txt too small"):
        prepare_dataset(PrepareConfig(input=str(tmp_path / "tiny.txt"), **base), log=lambda m: None)
    assert not os.path.exists(tmp_path / "o")
    with pytest.raises(DataError, match="validation split"):
        prepare_dataset(PrepareConfig(input=str(tmp_path / "tiny.txt"), validation_fraction=0.0001,
                                      **{**base, "seq_length": 2}), log=lambda m: None)
    with pytest.raises(DataError, match="does not exist"):
        prepare_dataset(PrepareConfig(input=str(tmp_path / "missing"), **base), log=lambda m: None)
    (tmp_path / "blob.dat").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DataError, match="blob.dat"):
        prepare_dataset(PrepareConfig(input=str(tmp_path / "blob.dat"), **base), log=lambda m: None)


def test_invalid_utf8_counted_in_manifest(tmp_path, small_dataset, corpus_dir):
    out, man, cfg, docs = small_dataset
    d, _ = corpus_dir
    bad = tmp_path / "bad.txt"
    bad.write_bytes((d / "a.txt").read_bytes() + b"\n\nbroken \xff\xfe text here\n")
    c = PrepareConfig(input=str(bad), tokenizer_model=os.path.join(out, "tokenizer.model"), seq_length=16,
                      validation_fraction=0.1, num_workers=0, progress=False, output_dir=str(tmp_path / "o"))
    with pytest.warns(DataWarning, match="bad.txt: 2 invalid UTF-8"):
        m = prepare_dataset(c, log=lambda m: None)
    assert m["reading"]["invalid_utf8_bytes"] == 2
    assert m["reading"]["files_with_invalid_utf8"] == [str(bad)]


def test_cli_with_yaml(tmp_path, corpus_dir):
    d, _ = corpus_dir
    yml = tmp_path / "c.yaml"
    yml.write_text(f"""
model:
  model_config:
    seq_length: 24
data:
  input: {d}
  validation_fraction: 0.1
  num_workers: 0
  shard_samples: 100
  tokenizer:
    vocab_size: 600
    sample_bytes: 200000
""")
    out = tmp_path / "cli_out"
    cmd = [sys.executable, os.path.join(REPO, "run", "prepare_data.py"), "--config", str(yml),
           "--output_dir", str(out), "--no_progress", "--seed", "7"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["seq_length"] == 24 and info["vocab_size"] == 600 and not info["reused"]
    man = read_manifest(str(out))
    assert man["seed"] == 7 and man["config"]["shard_samples"] == 100
    r2 = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r2.returncode == 0 and json.loads(r2.stdout)["reused"]
    r3 = subprocess.run(cmd + ["--seq_length", "20"], capture_output=True, text=True, timeout=120)
    assert r3.returncode == 2 and "different configuration" in r3.stderr
    r4 = subprocess.run([sys.executable, os.path.join(REPO, "run", "prepare_data.py"), "--input",
                         str(tmp_path / "nothing_here"), "--output_dir", str(tmp_path / "x")],
                        capture_output=True, text=True, timeout=120)
    assert r4.returncode == 2 and "nothing_here" in r4.stderr and "does not exist" in r4.stderr
