"""A tiny msrun worker for the launcher tests.

FAIL_RANK (default 1) exits with code 3, either before joining the cluster (FAIL_WHEN=before_init)
or after it, while the other ranks wait in an all-reduce (FAIL_WHEN=after_init). FAIL_RANK=-1: all
ranks succeed after one all-reduce.
"""
import os
import sys

import mindspore as ms

rank = int(os.environ.get("RANK_ID", "0"))
is_worker = os.environ.get("MS_ROLE") == "MS_WORKER"
fail_rank = int(os.environ.get("FAIL_RANK", "1"))
fail_when = os.environ.get("FAIL_WHEN", "before_init")


def fail():
    print(f"rank {rank} failing on purpose ({fail_when})", flush=True)
    sys.exit(3)


if is_worker and rank == fail_rank and fail_when == "before_init":
    fail()
from mindspore.communication import init  # noqa: E402

ms.set_context(mode=ms.PYNATIVE_MODE, device_target="CPU")
init()
if rank == fail_rank and fail_when == "after_init":
    fail()
from mindspore import ops  # noqa: E402

x = ops.AllReduce()(ms.Tensor([float(rank + 1)]))
print(f"rank {rank} all-reduce result {float(x.asnumpy()[0])}", flush=True)
