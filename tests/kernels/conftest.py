import numpy as np
import pytest

from bitcpm_ms.kernels import pack_ternary


def make_packed(rng, N, K, group_size, pow2_scales=False):
    g = K if group_size == -1 else group_size
    codes = rng.integers(-1, 2, size=(N, K)).astype(np.int8)
    if pow2_scales:
        scales = (2.0 ** rng.integers(-3, 3, size=(N, K // g))).astype(np.float32)
    else:
        scales = rng.uniform(0.01, 0.2, size=(N, K // g)).astype(np.float32)
    return pack_ternary(codes, scales, group_size), codes, scales


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
