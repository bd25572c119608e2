import numpy as np
import pytest

from bitcpm_ms.kernels import (PackedTernary, bits_per_weight, bits_per_weight_report, pack_ternary,
                               unpack_ternary)

from .conftest import make_packed


@pytest.mark.parametrize("N,K,g", [(1, 4, -1), (3, 32, 32), (5, 96, 32), (7, 100, 4), (2, 256, 64),
                                   (4, 384, 128), (3, 4096, -1), (2, 132, 12)])
def test_round_trip(rng, N, K, g):
    p, codes, scales = make_packed(rng, N, K, g)
    assert p.packed.dtype == np.uint8 and p.packed.shape == (N, K // 4)
    assert p.shape == (N, K)
    c2, s2 = unpack_ternary(p)
    assert c2.dtype == np.int8
    np.testing.assert_array_equal(c2, codes)
    np.testing.assert_array_equal(s2, scales)
    gg = K if g == -1 else g
    np.testing.assert_array_equal(p.dequantize(), codes * np.repeat(scales, gg, axis=1))


def test_layout_documented():
    # block of 128: byte j holds elements j, 32+j, 64+j, 96+j in bits 0-1, 2-3, 4-5, 6-7 as code+1
    codes = np.zeros((1, 128), np.int8)
    codes[0, 0] = 1      # u=2 at bits 0-1 of byte 0
    codes[0, 32] = -1    # u=0 at bits 2-3 of byte 0
    codes[0, 97] = 1     # u=2 at bits 6-7 of byte 1
    p = pack_ternary(codes, np.ones((1, 1), np.float32), -1)
    assert p.packed[0, 0] == (2 | 0 << 2 | 1 << 4 | 1 << 6)
    assert p.packed[0, 1] == (1 | 1 << 2 | 1 << 4 | 2 << 6)
    # tail block of 32 (K=160): q=8, byte 32+j holds elements 128+j, 136+j, 144+j, 152+j
    codes = np.zeros((1, 160), np.int8)
    codes[0, 136] = 1
    p = pack_ternary(codes, np.ones((1, 1), np.float32), -1)
    assert p.packed[0, 32] == (1 | 2 << 2 | 1 << 4 | 1 << 6)


def test_bits_per_weight():
    assert bits_per_weight(-1, 4096, 32) == pytest.approx(2 + 32 / 4096)
    assert bits_per_weight(32, 4096, 32) == 3.0
    assert bits_per_weight(64, 4096, 16) == 2.25
    assert bits_per_weight(128, 4096, 16) == 2.125
    rows = bits_per_weight_report(4096)
    assert [r["group_size"] for r in rows] == [-1, 32, 64, 128]


def test_errors(rng):
    codes = rng.integers(-1, 2, size=(4, 64)).astype(np.int8)
    ones = np.ones((4, 2), np.float32)
    with pytest.raises(ValueError, match="multiple of group_size"):
        pack_ternary(codes, np.ones((4, 1), np.float32), 48)
    with pytest.raises(ValueError, match="multiple of 4"):
        pack_ternary(np.zeros((4, 30), np.int8), np.ones((4, 1), np.float32), -1)
    with pytest.raises(ValueError, match=r"\{-1,0,1\}"):
        pack_ternary(codes * 2, ones, 32)
    with pytest.raises(ValueError, match="2-D"):
        pack_ternary(codes.reshape(-1), ones, 32)
    with pytest.raises(ValueError, match="scales must have shape"):
        pack_ternary(codes, np.ones((4, 3), np.float32), 32)
    with pytest.raises(ValueError, match="integer"):
        pack_ternary(codes + 0.5, ones, 32)
    with pytest.raises(ValueError, match="group_size"):
        pack_ternary(codes, ones, 0)
    p = pack_ternary(codes, ones, 32)
    bad = PackedTernary(p.packed | 0b11, p.scales, 32, p.shape)  # code 3 is invalid
    with pytest.raises(ValueError, match="invalid 2-bit code"):
        unpack_ternary(bad)
    with pytest.raises(ValueError, match="uint8"):
        unpack_ternary(PackedTernary(p.packed.astype(np.int16), p.scales, 32, p.shape))
    with pytest.raises(ValueError, match="scales has shape"):
        unpack_ternary(PackedTernary(p.packed, p.scales[:, :1], 32, p.shape))
