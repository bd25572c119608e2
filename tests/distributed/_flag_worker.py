"""msrun worker for test_cross_rank_flag. Two cases: all ranks finite, and rank 1 non-finite; every
rank prints its local (tagged) norm and the cross-rank decision (AnyRankFlag) for each case."""
import os

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn
from mindspore.communication import init
from mindspore.ops import composite as C
from mindspore.ops import operations as P

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
init()
ms.set_auto_parallel_context(parallel_mode="data_parallel", gradients_mean=True)
from bitcpm_ms.training.global_norm import AnyRankFlag, global_norm  # noqa: E402  (after the context)

rank = int(os.environ["RANK_ID"])


class Decide(nn.Cell):
    def __init__(self):
        super().__init__()
        self.hyper_map = C.HyperMap()
        self.any_rank = AnyRankFlag()
        self.isfinite = P.IsFinite()
        self.logical_not = P.LogicalNot()

    def construct(self, g1, g2):
        norm = global_norm(self.hyper_map, (g1, g2))
        return norm, self.any_rank(self.logical_not(self.isfinite(norm)))


decide = Decide()
for case, bad in (("all-finite", ()), ("rank1-inf", (1,))):
    g1 = np.array([3.0, 0.0], np.float32) * (rank + 1)
    g2 = np.array([[4.0]], np.float16) * (rank + 1)
    if rank in bad:
        g1[1] = np.inf
    norm, skip = decide(Tensor(g1), Tensor(g2))
    print(f"case {case} rank {rank} local_norm {float(norm.asnumpy()):.4f} skip {bool(skip.asnumpy())}", flush=True)
