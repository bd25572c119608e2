"""Agreeing on small decisions across the ranks of a job (which checkpoint to resume, when to stop).

Every rank of a data- or model-parallel job must resume from the same step and stop after the same
step, or the next collective in the training graph waits forever. The decisions are small integers
that each rank computes from what it sees (its own checkpoint files, the signals it received);
`gather_ints` exchanges them so every rank can apply the same rule to the same numbers.

It uses `ops.AllGather` in PyNative (called outside the compiled training graph, between steps):
on CPU MindSpore's AllReduce only supports SUM, while AllGather works for int32 (checked under
msrun, 2 workers, ~10 ms per call). A single process needs no communication at all.
"""
from typing import Sequence, Tuple

import numpy as np
from mindspore import ops
import mindspore as ms


def world() -> Tuple[int, int]:
    """(rank, world size) of the initialised communication group, or (0, 1) without one."""
    try:
        from mindspore.communication import get_group_size, get_rank
        return int(get_rank()), int(get_group_size())
    except (RuntimeError, ValueError, ImportError):
        return 0, 1


def gather_ints(values: Sequence[int]) -> np.ndarray:
    """[world, len(values)] int64: row r holds rank r's `values` (every rank passes the same length).

    Also a barrier: it returns on a rank only once every rank has called it."""
    row = np.asarray(list(values), dtype=np.int32).reshape(1, -1)
    _, size = world()
    if size == 1:
        return row.astype(np.int64)
    out = ops.AllGather()(ms.Tensor(row.reshape(-1)))
    return out.asnumpy().reshape(size, -1).astype(np.int64)


def barrier() -> None:
    """Wait until every rank gets here (`comm_func.barrier` has no CPU kernel in MindSpore 2.9)."""
    gather_ints([0])
