"""convert_for_ascend swaps the packed layers for the (unverified) WeightQuantBatchMatmul cell; the
op cannot run on CPU, so only the swap and its parameters are checked here."""
import numpy as np
import pytest

from bitcpm_ms.errors import ConversionError
from bitcpm_ms.inference.ascend import convert_for_ascend
from bitcpm_ms.quant.convert import convert_model
from bitcpm_ms.testing import random_bitcpm

from .conftest import SMALL, quant


def test_a8_layers_are_refused_by_default():
    net = convert_model(random_bitcpm(SMALL, quant(8), seed=3))
    with pytest.raises(ConversionError, match="W1.58A8"):
        convert_for_ascend(net)


def test_swap_builds_int4_weights_and_scales():
    net = convert_model(random_bitcpm(SMALL, quant(None), seed=4))
    scales = net.model.layers[0].attention.wq.to_packed().scales          # [N, K / g]
    names = convert_for_ascend(net)
    assert len(names) == 14 and "model.layers.0.attention.wq" in names
    cell = net.model.layers[0].attention.wq
    assert type(cell).__name__ == "AscendTernaryLinear"
    assert cell.weight.name == "model.layers.0.attention.wq.weight"
    assert tuple(cell.weight.shape) == (64, 32)                        # int4x2 [K, N / 2]
    np.testing.assert_allclose(cell.antiquant_scale.asnumpy().astype(np.float32), scales.T, rtol=1e-3)
