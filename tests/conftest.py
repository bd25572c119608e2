"""Shared test setup: MindSpore in GRAPH_MODE on CPU, the project root importable."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
