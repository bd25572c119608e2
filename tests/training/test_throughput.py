"""Tokens per step = global batch x sequence length, in sink mode, with full_batch and in data
parallel without it (BitCPMMetricsMonitor used to multiply what rank 0 saw by the worker count:
16x too much with full_batch, and nothing at all in sink mode)."""
from types import SimpleNamespace

import numpy as np

from bitcpm_ms.training import BitCPMMetricsMonitor
from bitcpm_ms.training.throughput import global_batch_size, tokens_per_step


class _Dataset:
    def __init__(self, batch):
        self.batch = batch

    def get_batch_size(self):
        return self.batch


def _cb(element_shape=None, dataset_batch=None, seq=None):
    elem = (np.zeros(element_shape, np.int32),) if element_shape else ()
    net = SimpleNamespace(config=SimpleNamespace(seq_length=seq, hidden_size=8)) if seq else None
    return SimpleNamespace(train_dataset_element=elem, train_dataset=_Dataset(dataset_batch) if dataset_batch else None,
                           train_network=net)


def test_global_batch_size_rules():
    assert global_batch_size(64, 16, "semi_auto_parallel", True) == 64           # every rank reads all of it
    assert global_batch_size(4, 16, "semi_auto_parallel", False, ((4, 1),)) == 16  # per-rank x dp
    assert global_batch_size(4, 2, "data_parallel", False) == 8
    assert global_batch_size(8, 1, "stand_alone", False) == 8


def test_sink_mode_full_batch_counts_the_global_batch_once(parallel_context):
    """910B YAML (8B): batch 8 x dp 8 = 64 sequences of 4096 per step, 16 NPUs, sink mode (no element)."""
    parallel_context(parallel_mode="semi_auto_parallel", full_batch=True)
    cb = _cb(dataset_batch=64, seq=4096)
    assert tokens_per_step(cb, cb.train_network.config, 16) == 64 * 4096
    monitor = BitCPMMetricsMonitor(device_num=16, rank_id=1)      # the callback derives the same number
    assert monitor._tokens_per_step(SimpleNamespace(**{**vars(cb), "train_network": _Net(4096)})) == 64 * 4096


def test_full_batch_non_sink_uses_the_element_without_multiplying(parallel_context):
    parallel_context(parallel_mode="semi_auto_parallel", full_batch=True)
    cb = _cb(element_shape=(32, 32769), seq=32768)        # 8B-32K: 1 x dp 4 x 8 micro-batches
    assert tokens_per_step(cb, cb.train_network.config, 16) == 32 * 32768


def test_data_parallel_without_full_batch_multiplies_by_the_ranks(parallel_context):
    parallel_context(parallel_mode="data_parallel")
    cb = _cb(element_shape=(4, 257))                      # per-rank batch 4, no model config: 257 - 1
    assert tokens_per_step(cb, None, 2) == 8 * 256
    monitor = BitCPMMetricsMonitor(device_num=2, rank_id=1)
    assert monitor._tokens_per_step(SimpleNamespace(**{**vars(cb), "train_network": _Net(256)})) == 8 * 256


def test_unknown_batch_gives_none(parallel_context):
    parallel_context(parallel_mode="stand_alone")
    assert tokens_per_step(_cb(seq=256), None, 1) is None


class _Net:
    """A network whose cells_and_names yields one cell with a model config (as PreTrainedModel)."""

    def __init__(self, seq):
        self.config = SimpleNamespace(seq_length=seq, hidden_size=8)

    def cells_and_names(self):
        yield "", self
