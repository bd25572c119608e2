"""Inspecting semi-auto-parallel strategies without devices.

MindSpore refuses SEMI_AUTO_PARALLEL training on CPU (no CPU communication backend), but the
strategies MindFormers sets with `shard()` are plain primitive attributes set while the network
is built, and building only needs the auto-parallel context to say SEMI_AUTO_PARALLEL.
`simulated_semi_auto(device_num)` sets that context (no communication init) and makes
MindFormers' `_check_config` see `device_num` ranks, so networks can be built on CPU and their
`prim.attrs["in_strategy"]` compared. Nothing is compiled or run in parallel.
"""
import contextlib
from typing import Dict, Tuple

import mindspore as ms
from mindspore import nn
import mindformers.modules.transformer.op_parallel_config as opc


@contextlib.contextmanager
def simulated_semi_auto(device_num: int, pipeline_stages: int = 1):
    """Build-time semi-auto-parallel context for `device_num` ranks; restored afterwards."""
    saved_mode = ms.get_auto_parallel_context("parallel_mode")
    saved_group_size = opc.D.get_group_size
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel", device_num=device_num, full_batch=True,
                                 pipeline_stages=pipeline_stages)
    opc.D.get_group_size = lambda *args, **kwargs: device_num
    try:
        yield
    finally:
        opc.D.get_group_size = saved_group_size
        ms.reset_auto_parallel_context()
        ms.set_auto_parallel_context(parallel_mode=saved_mode)


def primitive_strategies(net: nn.Cell) -> Dict[str, Tuple]:
    """{'cell.path.prim_attr': in_strategy} for every primitive of `net` that has one."""
    out = {}
    for name, cell in net.cells_and_names():
        for attr, prim in getattr(cell, "_primitives", {}).items():
            if prim is None:
                continue
            strategy = prim.attrs.get("in_strategy")
            if strategy:
                out[f"{name}.{attr}" if name else attr] = tuple(tuple(s) for s in strategy)
    return out


def primitives_without_strategy(net: nn.Cell):
    """Names of primitives that carry no strategy (MindSpore picks a default for them)."""
    out = []
    for name, cell in net.cells_and_names():
        for attr, prim in getattr(cell, "_primitives", {}).items():
            if prim is not None and not prim.attrs.get("in_strategy"):
                out.append(f"{name}.{attr}" if name else attr)
    return out
