"""Document masking in a run: the one switch, the dataset columns it needs, the data it needs.

`model.model_config.use_eod_attn_mask_compression` (MindFormers' key) is the switch. With it on,
the model reads each sample's `actual_seq_len` (data/documents.py) and keeps attention and RoPE
positions inside every document (models/documents.py). This module keeps the rest of the run in
line with the switch:

* `sync_document_columns` (after overrides): the train / eval datasets' `input_columns` (and
  `construct_args_key`, when the YAML names one) get `actual_seq_len` after `input_ids` when the
  switch is on and lose it when it is off, so `--model.model_config.use_eod_attn_mask_compression
  true` is the whole change. MindFormers' Trainer passes the columns to the model by these names
  (its DataOrderWrapperCell).
* `check_document_data` (before training): with the switch on, training data without the column is
  a ConfigError naming the data and the fix; with it off, a dataset prepared before the column
  (data format 1) trains as before, and a note says what preparing it again would give.
"""
import os
import sys

from ..data.dataset import mindrecord_columns
from ..data.documents import ACTUAL_SEQ_LEN, check_actual_seq_len
from ..data.manifest import old_format_note, read_manifest_file
from ..errors import ConfigError

SWITCH = "model.model_config.use_eod_attn_mask_compression"


def document_masking(config) -> bool:
    """The switch, checked to be a boolean (ConfigError otherwise)."""
    value = (config.model.model_config or {}).get("use_eod_attn_mask_compression", False)
    if not isinstance(value, bool):
        raise ConfigError(f"{SWITCH} must be true or false, got {value!r}")
    return value


def _with_column(columns, on: bool) -> list:
    columns = [c for c in (columns or ["input_ids"]) if c != ACTUAL_SEQ_LEN]
    if on:
        at = columns.index("input_ids") + 1 if "input_ids" in columns else len(columns)
        columns.insert(at, ACTUAL_SEQ_LEN)
    return columns


def sync_document_columns(config) -> None:
    """Make the datasets' columns follow the switch (see module doc)."""
    on = document_masking(config)
    for name in ("train_dataset", "eval_dataset"):
        section = config.get(name)
        if not section:
            continue
        section.input_columns = _with_column(section.get("input_columns"), on)
        if section.get("construct_args_key"):
            section.construct_args_key = _with_column(section.get("construct_args_key"), on)


def _dataset_root(path: str):
    for d in (path, os.path.dirname(os.path.normpath(path))):
        if d and os.path.isdir(d) and read_manifest_file(d) is not None:
            return d
    return None


def check_document_data(config, files) -> None:
    """The training data carries `actual_seq_len` when the switch is on (see module doc)."""
    loader = config.train_dataset.data_loader
    path = loader.get("dataset_dir") or loader.get("dataset_files")
    root = _dataset_root(path) if isinstance(path, str) else None
    man = read_manifest_file(root) if root else None
    if man is not None:
        has = ACTUAL_SEQ_LEN in (man.get("columns") or {})
    else:
        has = ACTUAL_SEQ_LEN in mindrecord_columns(files)
    if document_masking(config) and not has:
        how = (f"prepared before data format 2 (format {man.get('format_version', 1)}); prepare it again: "
               f"python3 run/prepare_data.py --config CONFIG --overwrite" if man is not None else
               "MindRecord data needs an int32 actual_seq_len column (document ends per sample, docs/data.md)")
        raise ConfigError(f"{SWITCH} is on, but the training data {path} has no {ACTUAL_SEQ_LEN} column: {how}; "
                          f"or set --{SWITCH} false")
    if man is not None and not has and int(os.environ.get("RANK_ID", "0") or 0) == 0:
        print(old_format_note(root, man), file=sys.stderr, flush=True)
    if document_masking(config):
        check_first_rows(files, int(config.model.model_config.seq_length), path)


def check_first_rows(files, seq_length: int, path, rows: int = 64) -> None:
    """The first `rows` actual_seq_len rows are valid document ends (data/documents.py): data from
    elsewhere gets a named ActualSeqLenError here, not a silently wrong layout in the graph."""
    import mindspore.dataset as ds
    loader = ds.MindDataset(files, columns_list=[ACTUAL_SEQ_LEN], shuffle=False, num_samples=rows)
    ends = [r[0] for r in loader.create_tuple_iterator(output_numpy=True, num_epochs=1)]
    for i, row in enumerate(ends):
        check_actual_seq_len(row[None], seq_length, f"training data {path}: actual_seq_len of sample {i}")
