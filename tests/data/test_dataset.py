import numpy as np
import pytest
import yaml

from bitcpm_ms.data.dataset import build_dataset
from bitcpm_ms.data.errors import DataError


def _all(ds):
    return np.concatenate([b[0] for b in ds.create_tuple_iterator(num_epochs=1, output_numpy=True)])


def test_build_dataset_shapes(small_dataset):
    out, man, cfg, docs = small_dataset
    ds = build_dataset(str(out), batch_size=4, split="train", seed=1)
    b = next(ds.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(b) == 1 and b[0].shape == (4, cfg.seq_length + 1) and b[0].dtype == np.int32
    assert ds.get_dataset_size() == man["splits"]["train"]["samples"] // 4
    val = _all(build_dataset(str(out), batch_size=2, split="validation", drop_remainder=False))
    assert val.shape[0] == man["splits"]["validation"]["samples"]


def test_rank_sharding_disjoint(small_dataset):
    out, man, cfg, docs = small_dataset
    total = man["splits"]["train"]["samples"]
    for device_num in (2, 3):
        parts = [_all(build_dataset(str(out), batch_size=1, split="train", shuffle=shuffle,
                                    rank_id=r, device_num=device_num, seed=5))
                 for r in range(device_num) for shuffle in (True,)]
        sets = [set(map(bytes, p)) for p in parts]
        assert all(len(p) == total // device_num for p in parts)
        for i in range(device_num):
            for j in range(i + 1, device_num):
                assert not sets[i] & sets[j]
        full = set(map(bytes, _all(build_dataset(str(out), 1, split="train", shuffle=False))))
        assert set().union(*sets) <= full and len(set().union(*sets)) == device_num * (total // device_num)
    with pytest.raises(DataError, match="rank_id"):
        build_dataset(str(out), 1, rank_id=2, device_num=2)


def test_errors(tmp_path, small_dataset):
    out, man, cfg, docs = small_dataset
    with pytest.raises(DataError, match="does not exist"):
        build_dataset(str(tmp_path / "none"), 2)
    with pytest.raises(DataError, match="no manifest.json"):
        build_dataset(str(tmp_path), 2)
    with pytest.raises(DataError, match="fewer than batch_size"):
        build_dataset(str(out), 10_000, split="validation")


YAML_SECTION = """
train_dataset: &train_dataset
  data_loader:
    type: MindDataset
    dataset_dir: "{train_dir}"
    shuffle: True
  input_columns: ["input_ids"]
  num_parallel_workers: 1
  python_multiprocessing: False
  drop_remainder: True
  batch_size: 4
  repeat: 1
  numa_enable: False
  prefetch_size: 1
train_dataset_task:
  type: CausalLanguageModelDataset
  dataset_config: *train_dataset
eval_dataset: &eval_dataset
  data_loader:
    type: MindDataset
    dataset_dir: "{val_dir}"
    shuffle: False
  input_columns: ["input_ids"]
  num_parallel_workers: 1
  python_multiprocessing: False
  drop_remainder: False
  batch_size: 4
  repeat: 1
  numa_enable: False
  prefetch_size: 1
eval_dataset_task:
  type: CausalLanguageModelDataset
  dataset_config: *eval_dataset
"""


def test_mindformers_builder_with_yaml_section(small_dataset):
    from mindformers.dataset.build_dataset import build_dataset as mf_build
    from mindformers.tools.register import MindFormerConfig
    out, man, cfg, docs = small_dataset
    y = yaml.safe_load(YAML_SECTION.format(train_dir=out / "train", val_dir=out / "validation"))
    conf = MindFormerConfig(**y)
    train = mf_build(conf.train_dataset_task)
    b = next(train.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert b[0].shape == (4, cfg.seq_length + 1) and b[0].dtype == np.int32
    assert train.get_dataset_size() == man["splits"]["train"]["samples"] // 4
    val = _all(mf_build(conf.eval_dataset_task))
    assert val.shape == (man["splits"]["validation"]["samples"], cfg.seq_length + 1)
