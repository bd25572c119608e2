"""The global norm and the skip flag are marked for MindSpore's cross-rank reductions, and equal a
plain reference in one process (the 2-worker checks: tests/distributed/test_data_parallel.py and
the slow tests/distributed/test_cross_rank_flag.py)."""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn
from mindspore.ops import composite as C

from bitcpm_ms.training import BitCPMTrainOneStepCell
from bitcpm_ms.training import global_norm as gn

# Nodes MindSpore's HandleGlobalNormScale walks from a gradient to the tagged ExpandDims
# (FindExpandDimsWIthGradScale, mindspore/ccsrc/frontend/parallel/parallel_postprocessor.cc)
WALKED = {"EnvironGet", "Mul", "Square", "ReduceSum", "ExpandDims", "Depend", "Cast", "RefToEmbed", "Embed",
          "Load", "SumExt"}


def test_square_sums_use_only_ops_the_parallel_pass_follows_and_carry_the_tag():
    assert gn.tag_for_global_norm.name == "ExpandDims"
    assert gn.tag_for_global_norm.attrs.get("grad_scale") is True
    for prim in (gn._cast, gn._square, gn._reduce_sum, gn.tag_for_global_norm):
        assert prim.name in WALKED, prim.name
    assert gn._sqrt.name == "Sqrt"           # the AllReduce is put in front of the Sqrt after the tag


class _Norm(nn.Cell):
    def __init__(self):
        super().__init__()
        self.hyper_map = C.HyperMap()

    def construct(self, *grads):
        return gn.global_norm(self.hyper_map, grads)


def test_global_norm_equals_numpy_for_mixed_dtypes():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal(3).astype(np.float16),
             np.array([[2.5]], np.float32)]
    ref = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads))
    out = _Norm()(*[Tensor(g) for g in grads])
    assert out.shape == () and abs(float(out.asnumpy()) - ref) < 1e-5 * ref


def test_flag_is_reduced_only_when_distributed():
    assert gn.AnyRankFlag().distributed is False
    flag = Tensor(np.array(True))
    assert bool(gn.AnyRankFlag()(flag).asnumpy()) is True
    saved = ms.get_auto_parallel_context("parallel_mode")
    try:
        for mode in ("data_parallel", "semi_auto_parallel"):
            ms.set_auto_parallel_context(parallel_mode=mode)
            cell = gn.AnyRankFlag()
            assert cell.distributed and cell.allreduce.name == "AllReduce", mode
    finally:
        ms.set_auto_parallel_context(parallel_mode=saved)


def test_wrapper_uses_the_tagged_norm_and_the_cross_rank_flag():
    net = nn.Dense(3, 2)
    step = BitCPMTrainOneStepCell(nn.WithLossCell(net, nn.MSELoss()), nn.SGD(net.trainable_params(), 0.1))
    assert isinstance(step.any_rank, gn.AnyRankFlag) and step.any_rank.distributed is False
