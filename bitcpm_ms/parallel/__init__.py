"""Helpers for distributed training: shard-local quantization analysis and strategy inspection.

The config checks (`bitcpm_ms.app.config`) use `check_tp_divisibility`; tests and
`benchmarks/shard_quant.py` use the analysis; `strategies` inspects semi-auto-parallel strategies
of a network built on CPU.
"""
from .shard_quant import (COLUMN_PARALLEL, ROW_PARALLEL, check_tp_divisibility, local_fake_quant, local_quantize,
                          row_parallel_deviation, shards, split_kind)

__all__ = ["COLUMN_PARALLEL", "ROW_PARALLEL", "check_tp_divisibility", "local_fake_quant", "local_quantize",
           "row_parallel_deviation", "shards", "split_kind"]
