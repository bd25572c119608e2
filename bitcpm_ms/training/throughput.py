"""Tokens per optimizer step of a run: global batch size x sequence length.

What one rank sees of the batch depends on the parallel mode, so the count is derived from the
run's settings, not from the batch tensor alone:
  * data parallel (and stand-alone): each rank reads its own `batch` rows; global = batch x ranks.
  * semi-/auto parallel with `full_batch: True` (the 910B YAMLs): every rank reads the whole global
    batch (MindFormers sets the dataset batch to batch_size x data_parallel x micro_batch_num, or
    x gradient_accumulation_steps; base_trainer._check_global_batch_size_for_auto_parallel), so
    multiplying by the rank count would count it 16 times on 16 NPUs.
  * semi-/auto parallel without full_batch: ranks of one data-parallel group share rows;
    global = batch x data-parallel degree (dataset_strategy[0][0]).
In dataset sink mode (the 910B default) MindSpore passes no batch to the callbacks
(`cb_params.train_dataset_element` is empty), so the batch size comes from the dataset object.
"""
from typing import Optional

import mindspore as ms


def global_batch_size(per_rank_batch: int, world_size: int, parallel_mode: str, full_batch: bool,
                      dataset_strategy=None) -> int:
    """Sequences per optimizer step over all ranks (see the module docstring)."""
    if parallel_mode in ("semi_auto_parallel", "auto_parallel"):
        if full_batch:
            return int(per_rank_batch)
        if isinstance(dataset_strategy, (tuple, list)) and dataset_strategy and dataset_strategy[0]:
            return int(per_rank_batch) * int(dataset_strategy[0][0])
    return int(per_rank_batch) * int(world_size)


def per_rank_batch_and_seq(cb_params, model_config=None):
    """(rows per step on this rank, trained sequence length) from the dataset / the batch / the model
    config; None where unknown. Training batches hold seq_length + 1 ids per row."""
    batch, seq = None, getattr(model_config, "seq_length", None)
    elem = getattr(cb_params, "train_dataset_element", None)
    if elem:                                      # non-sink mode: the batch itself
        shape = elem[0].shape
        batch = int(shape[0])
        seq = seq or int(shape[1]) - 1
    dataset = getattr(cb_params, "train_dataset", None)
    if batch is None and dataset is not None and hasattr(dataset, "get_batch_size"):
        batch = int(dataset.get_batch_size())     # sink mode
    return batch, seq


def tokens_per_step(cb_params, model_config, world_size: int) -> Optional[int]:
    """Global batch x sequence length for this run, or None if the batch size is unknown."""
    batch, seq = per_rank_batch_and_seq(cb_params, model_config)
    if not batch or not seq:
        return None
    sequences = global_batch_size(batch, world_size, ms.get_auto_parallel_context("parallel_mode"),
                                  bool(ms.get_auto_parallel_context("full_batch")),
                                  ms.get_auto_parallel_context("dataset_strategy"))
    return sequences * int(seq)
