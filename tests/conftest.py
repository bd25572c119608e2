"""Shared test setup: MindSpore in GRAPH_MODE on CPU, the project root importable."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402
import pytest  # noqa: E402

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")


@pytest.fixture(params=[ms.PYNATIVE_MODE, ms.GRAPH_MODE], ids=["pynative", "graph"])
def mode(request):
    """Run a test in PyNative and in graph mode, restoring graph mode afterwards."""
    old = ms.get_context("mode")
    ms.set_context(mode=request.param, device_target="CPU")
    yield request.param
    ms.set_context(mode=old)
