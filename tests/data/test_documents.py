"""Document boundaries of packed samples: the actual_seq_len column, its checks, old datasets."""
import json
import os

import numpy as np
import pytest

from bitcpm_ms.data import documents as D
from bitcpm_ms.data.config import PrepareConfig
from bitcpm_ms.data.dataset import build_dataset, has_documents
from bitcpm_ms.data.errors import DataError
from bitcpm_ms.data.manifest import MANIFEST, old_format_note, read_manifest
from bitcpm_ms.data.packing import prepare_dataset
from bitcpm_ms.data.tokenizer import EOS_ID

from .test_packing import split_rows


def read_ends(path):
    from mindspore.mindrecord import FileReader
    r = FileReader(path)
    ends = [np.asarray(x["actual_seq_len"]) for x in r.get_next()]
    r.close()
    return np.stack(ends)


def eos_ends(row, seq):
    """Ends from the EOS positions of one row's inputs, computed the plain way."""
    ends = [p + 1 for p in range(seq) if row[p] == EOS_ID]
    return ends if ends and ends[-1] == seq else ends + [seq]


def test_actual_seq_len_matches_the_eos_positions_of_the_stream(small_dataset):
    out, man, cfg, docs = small_dataset
    seq = cfg.seq_length
    assert man["format_version"] == 2 and man["eod_pad_length"] == cfg.eod_pad_length == 128
    assert man["columns"] == {"input_ids": [seq + 1], "actual_seq_len": [128]}
    for split in ("train", "validation"):
        rows = np.concatenate(split_rows(out, man, split))
        ends = np.concatenate([read_ends(os.path.join(out, f["file"])) for f in man["splits"][split]["files"]])
        assert ends.shape == (len(rows), 128) and ends.dtype == np.int32
        D.check_actual_seq_len(ends, seq)
        most = 0
        for row, e in zip(rows, ends):
            real = list(e[e < seq]) + [seq]
            assert real == eos_ends(row, seq)
            assert (e[len(real):] == seq).all()              # padded with seq_length
            most = max(most, len(real))
        assert man["splits"][split]["max_documents_per_sample"] == most > 1


def test_a_document_longer_than_a_sample_is_split_into_documents(tmp_path, small_dataset):
    out, man, cfg, docs = small_dataset
    text = " ".join(f"word{i}" for i in range(400))             # one document of several samples
    (tmp_path / "long.txt").write_text(text + "\n\nshort one\n\nanother short document", encoding="utf-8")
    c = PrepareConfig(input=str(tmp_path / "long.txt"), tokenizer_model=os.path.join(out, "tokenizer.model"),
                      seq_length=16, validation_fraction=0.0, num_workers=0, progress=False, shuffle=False,
                      output_dir=str(tmp_path / "o"))
    m = prepare_dataset(c, log=lambda m: None)
    rows = np.concatenate(split_rows(str(tmp_path / "o"), m, "train"))
    ends = read_ends(str(tmp_path / "o" / m["splits"]["train"]["files"][0]["file"]))
    assert (ends[:3] == 16).all()           # rows inside the long document: one document each
    pos = D.position_ids(ends, 16)
    assert (pos[:, 0] == 0).all()           # every piece starts at position 0
    np.testing.assert_array_equal(pos[1], np.arange(16))
    last = [i for i, e in enumerate(ends) if (e < 16).any()][0]
    assert rows[last][ends[last][0] - 1] == EOS_ID


def test_too_many_documents_for_the_column_is_named(tmp_path, small_dataset):
    out, man, cfg, docs = small_dataset
    c = PrepareConfig(**{**cfg.__dict__, "eod_pad_length": 2, "output_dir": str(tmp_path / "o")})
    with pytest.raises(DataError, match=r"holds \d+ documents, more than eod_pad_length 2.*data.eod_pad_length"):
        prepare_dataset(c, log=lambda m: None)
    assert not os.path.exists(tmp_path / "o")
    with pytest.raises(DataError, match="eod_pad_length"):
        prepare_dataset(PrepareConfig(**{**cfg.__dict__, "eod_pad_length": 0, "output_dir": str(tmp_path / "p")}),
                        log=lambda m: None)


@pytest.mark.parametrize("row, message", [
    ([3, 2, 9, 9], r"row 1: not increasing at index 1 \(3 then 2\)"),
    ([3, 3, 9, 9], r"row 1: not increasing at index 1 \(3 then 3\)"),
    ([3, 12, 9, 9], r"row 1: value 12 at index 1 is beyond seq_length 9"),
    ([0, 4, 9, 9], r"row 1: value 0 at index 0 is below 1"),
    ([3, 5, 7, 8], r"row 1: last value 8 is not seq_length 9"),
])
def test_bad_actual_seq_len_gets_a_named_error(row, message):
    with pytest.raises(D.ActualSeqLenError, match=message):
        D.check_actual_seq_len(np.array([[1, 9, 9, 9], row], np.int32), 9)
    assert issubclass(D.ActualSeqLenError, DataError)


def test_layout_reference_boundaries_at_first_and_last_position():
    seq = 6
    ids = np.array([[EOS_ID, 5, 6, 7, 8, 9], [5, 6, 7, 8, 9, EOS_ID], [5, 6, EOS_ID, 7, 8, EOS_ID]])
    full = np.concatenate([ids, [[4], [4], [4]]], axis=1)
    ends = D.rows_actual_seq_len(full, EOS_ID, 4)
    np.testing.assert_array_equal(ends, [[1, 6, 6, 6], [6, 6, 6, 6], [3, 6, 6, 6]])
    np.testing.assert_array_equal(D.position_ids(ends, seq), [[0, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5],
                                                               [0, 1, 2, 0, 1, 2]])
    np.testing.assert_array_equal(D.crossing_labels(ends, ids, [EOS_ID]).astype(int),
                                  [[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 1, 0, 0, 1]])
    assert [list(d) for d in D.split_documents(ids[2], ends[2])] == [[5, 6, EOS_ID], [7, 8, EOS_ID]]


def test_dataset_yields_the_column_and_old_datasets_still_read(small_dataset, tmp_path):
    out, man, cfg, docs = small_dataset
    ds = build_dataset(str(out), batch_size=4, split="validation", shuffle=False, documents=True)
    ids, ends = next(ds.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert ids.shape == (4, cfg.seq_length + 1) and ends.shape == (4, 128) and ends.dtype == np.int32
    for row, e in zip(ids, ends):
        assert list(e[e < cfg.seq_length]) + [cfg.seq_length] == eos_ends(row, cfg.seq_length)
    assert has_documents(str(out)) and old_format_note(str(out), man) is None
    # a dataset of format 1: input_ids only (what earlier versions wrote)
    from bitcpm_ms.testing import write_token_rows
    old = tmp_path / "old"
    write_token_rows(str(old / "train" / "shard_00000.mindrecord"), np.concatenate(split_rows(out, man, "train")))
    old_man = {k: v for k, v in man.items() if k not in ("columns", "eod_pad_length")}
    old_man.update(format_version=1, fingerprint="0" * 64, splits={"train": {**man["splits"]["train"], "files": [
        {"file": "train/shard_00000.mindrecord"}]}, "validation": man["splits"]["validation"]})
    (old / MANIFEST).write_text(json.dumps(old_man))
    assert not has_documents(str(old))
    assert "prepared with data format 1" in old_format_note(str(old), read_manifest(str(old)))
    plain = build_dataset(str(old), batch_size=4, shuffle=False)
    assert next(plain.create_tuple_iterator(num_epochs=1, output_numpy=True))[0].shape == (4, cfg.seq_length + 1)
    with pytest.raises(DataError, match="has no actual_seq_len column"):
        build_dataset(str(old), batch_size=4, documents=True)
    # preparing into it again without --overwrite names the old format
    with pytest.raises(DataError, match="data format 1, prepared before the actual_seq_len column"):
        prepare_dataset(PrepareConfig(**{**cfg.__dict__, "output_dir": str(old)}), log=lambda m: None)
