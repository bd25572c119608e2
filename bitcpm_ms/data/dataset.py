"""Loading a prepared dataset for training / evaluation through MindFormers' builders."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Union

from .documents import ACTUAL_SEQ_LEN
from .errors import DataError
from .manifest import SPLITS, has_document_column, read_manifest_file, split_files


def mindrecord_columns(files: Sequence[str]) -> List[str]:
    """The column names of a MindRecord dataset (from its first file's schema)."""
    from mindspore.mindrecord import FileReader
    reader = FileReader(files[0])
    try:
        return sorted(reader.schema())
    finally:
        reader.close()


def has_documents(dataset_dir_or_files, split: str = "train") -> bool:
    """Whether the data carries the actual_seq_len column (manifest when prepared, else the schema)."""
    if isinstance(dataset_dir_or_files, (str, os.PathLike)) and os.path.isdir(dataset_dir_or_files):
        man = read_manifest_file(os.fspath(dataset_dir_or_files))
        if man is not None:
            return has_document_column(man)
    return ACTUAL_SEQ_LEN in mindrecord_columns(dataset_files(dataset_dir_or_files, split))


def dataset_files(dataset_dir_or_files: Union[str, Sequence[str]], split: str = "train") -> List[str]:
    """MindRecord files of ``split``: from a prepared dataset directory (manifest) or as given."""
    if isinstance(dataset_dir_or_files, (str, os.PathLike)):
        p = os.fspath(dataset_dir_or_files)
        if os.path.isdir(p):
            return split_files(p, split)
        if not os.path.isfile(p):
            raise DataError(f"dataset path {p!r} does not exist (run run/prepare_data.py first)")
        return [p]
    files = [os.fspath(f) for f in dataset_dir_or_files]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing or not files:
        raise DataError(f"dataset file(s) missing: {missing or '(empty list)'}")
    return files


def build_dataset(dataset_dir_or_files: Union[str, Sequence[str]], batch_size: int,
                  split: str = "train", shuffle: Optional[bool] = None,
                  rank_id: Optional[int] = None, device_num: Optional[int] = None,
                  seed: Optional[int] = None, drop_remainder: bool = True,
                  num_parallel_workers: int = 1, repeat: int = 1, num_samples: Optional[int] = None,
                  documents: bool = False):
    """A MindSpore dataset of ``input_ids`` batches ``[batch_size, seq_length + 1]`` int32, with
    ``documents`` also of ``actual_seq_len`` batches ``[batch_size, eod_pad_length]`` int32 (a
    DataError names data prepared without that column).

    Built as ``mindspore.dataset.MindDataset`` (data-parallel sharding: ``num_shards=device_num,
    shard_id=rank_id``; every rank gets a disjoint, equally sized part of ``total // device_num``
    samples, the ``total % device_num`` left over are skipped that epoch) wrapped by MindFormers'
    ``CausalLanguageModelDataset`` (batching, int32 cast, column projection).

    ``shuffle``: default True for train (global shuffle across shards, re-drawn every epoch,
    seeded by ``seed`` via ``mindspore.dataset.config.set_seed`` when given), False for
    validation. ``rank_id``/``device_num`` default to the communication group when one is
    initialised, else a single shard.
    """
    import mindspore.dataset as ds
    from mindformers.dataset import CausalLanguageModelDataset

    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (train, validation)")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    files = dataset_files(dataset_dir_or_files, split)
    if shuffle is None:
        shuffle = split == "train"
    if device_num is None or rank_id is None:
        try:
            from mindspore.communication import get_group_size, get_rank
            device_num, rank_id = get_group_size(), get_rank()
        except Exception:  # communication not initialised: single process
            device_num, rank_id = 1, 0
    if not 0 <= rank_id < device_num:
        raise DataError(f"rank_id {rank_id} out of range for device_num {device_num}")
    if seed is not None:
        ds.config.set_seed(int(seed))
    columns = ["input_ids"]
    if documents:
        if not has_documents(dataset_dir_or_files, split):
            raise DataError(f"{dataset_dir_or_files}: the {split} data has no {ACTUAL_SEQ_LEN} column (prepared "
                            f"before data format 2); prepare it again (--overwrite) to use document masking")
        columns.append(ACTUAL_SEQ_LEN)
    kwargs = dict(dataset_files=files, columns_list=columns, shuffle=shuffle,
                  num_parallel_workers=num_parallel_workers)
    if device_num > 1:
        # MindDataset shards by stride and pads the shorter shards by repeating samples; cap
        # every rank at total // device_num samples so the ranks' parts are disjoint.
        total = ds.MindDataset(dataset_files=files, columns_list=["input_ids"],
                               shuffle=False).get_dataset_size()
        per_rank = total // device_num
        if per_rank == 0:
            raise DataError(f"{split} split has {total} samples, fewer than device_num {device_num}")
        kwargs.update(num_shards=device_num, shard_id=rank_id)
        num_samples = per_rank if num_samples is None else min(num_samples, per_rank)
    if num_samples is not None:
        kwargs["num_samples"] = num_samples
    loader = ds.MindDataset(**kwargs)
    n = loader.get_dataset_size()
    if n < batch_size and drop_remainder:
        raise DataError(f"{split} split has {n} samples on this rank, fewer than batch_size {batch_size}")
    return CausalLanguageModelDataset(data_loader=loader, input_columns=columns,
                                      batch_size=batch_size, drop_remainder=drop_remainder,
                                      num_parallel_workers=num_parallel_workers, repeat=repeat)
