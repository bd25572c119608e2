"""Helpers for distributed training: shard-local quantization analysis and strategy inspection."""
from .shard_quant import (COLUMN_PARALLEL, ROW_PARALLEL, check_tp_divisibility, local_fake_quant, local_quantize,
                          row_parallel_deviation, shards, split_kind)

__all__ = ["COLUMN_PARALLEL", "ROW_PARALLEL", "check_tp_divisibility", "local_fake_quant", "local_quantize",
           "row_parallel_deviation", "shards", "split_kind"]
