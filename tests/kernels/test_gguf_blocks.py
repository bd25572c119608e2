"""TQ2_0 / TQ1_0 blocks written from our codes and scales, checked against the ggml project's own
reference (gguf.quants): dequantization gives codes * fp16(scale) exactly, and on exactly
representable weights the bytes equal llama.cpp's reference quantizer's."""
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402

from bitcpm_ms.errors import ConversionError  # noqa: E402
from bitcpm_ms.kernels.gguf_blocks import (BLOCK_BYTES, QK_K, block_scales, dequantize_tq, pack_tq,  # noqa: E402
                                           requantize_block_scales, tq_representable)

TYPES = {"tq2_0": QT.TQ2_0, "tq1_0": QT.TQ1_0}


def _codes(rng, shape, p_zero=0.4):
    c = rng.choice(np.array([-1, 0, 1], np.int8), size=shape, p=[(1 - p_zero) / 2, p_zero, (1 - p_zero) / 2])
    return c


@pytest.mark.parametrize("kind", sorted(TYPES))
@pytest.mark.parametrize("shape", [(1, 256), (3, 768), (5, 512)])
def test_blocks_dequantize_to_codes_times_fp16_scale(kind, shape):
    rng = np.random.default_rng(shape[0] * 7 + shape[1])
    codes = _codes(rng, shape)
    d = rng.uniform(1e-3, 0.2, (shape[0], shape[1] // QK_K)).astype(np.float32)
    blocks = pack_tq(kind, codes, d)
    assert blocks.dtype == np.uint8 and blocks.shape == (shape[0], shape[1] // QK_K * BLOCK_BYTES[kind])
    got = gguf.quants.dequantize(blocks, TYPES[kind])
    np.testing.assert_array_equal(got, dequantize_tq(codes, d))
    d16 = d.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(got, codes * np.repeat(d16, QK_K, axis=1))
    # the same bytes as llama.cpp's reference quantizer on the exactly representable weight
    # (every block has a nonzero code, so its max |w| is the scale)
    np.testing.assert_array_equal(gguf.quants.quantize(got, TYPES[kind]), blocks)


@pytest.mark.parametrize("kind", sorted(TYPES))
def test_extreme_blocks(kind):
    """All -1, all +1, all 0 (scale 0) and alternating blocks in one row."""
    row = np.concatenate([np.full(256, -1), np.full(256, 1), np.zeros(256), np.tile([1, -1, 0, 1], 64)])
    codes = row.astype(np.int8)[None, :]
    d = np.array([[0.5, 0.25, 0.0, 3.0]], np.float32)
    got = gguf.quants.dequantize(pack_tq(kind, codes, d), TYPES[kind])
    np.testing.assert_array_equal(got, codes * np.repeat(d, QK_K, axis=1))


def test_block_scales_exact_only_for_256_multiples():
    rng = np.random.default_rng(0)
    s_row = rng.uniform(0.01, 0.1, (4, 1)).astype(np.float32)
    np.testing.assert_array_equal(block_scales(s_row, 512, -1), np.repeat(s_row, 2, axis=1))
    s512 = rng.uniform(0.01, 0.1, (4, 2)).astype(np.float32)
    np.testing.assert_array_equal(block_scales(s512, 1024, 512), np.repeat(s512, 2, axis=1))
    s256 = rng.uniform(0.01, 0.1, (4, 3)).astype(np.float32)
    np.testing.assert_array_equal(block_scales(s256, 768, 256), s256)
    assert tq_representable(768, 256) and tq_representable(512, -1) and tq_representable(1024, 512)
    assert not tq_representable(768, 64) and not tq_representable(320, -1) and not tq_representable(768, 384)
    with pytest.raises(ConversionError, match="group size 64.*--requantize"):
        block_scales(np.ones((4, 12), np.float32), 768, 64, "model.layers.0.attention.wq.weight")
    with pytest.raises(ConversionError, match="multiple of 256"):
        block_scales(np.ones((4, 1), np.float32), 320, -1)
    with pytest.raises(ConversionError, match="multiple of 256"):
        pack_tq("tq2_0", np.zeros((2, 320), np.int8), np.zeros((2, 1), np.float32))
    with pytest.raises(ConversionError, match="unknown ternary GGUF type"):
        pack_tq("q4_0", np.zeros((2, 256), np.int8), np.zeros((2, 1), np.float32))
    with pytest.raises(ConversionError, match="codes must be in"):
        pack_tq("tq1_0", np.full((1, 256), 2, np.int8), np.zeros((1, 1), np.float32))


def test_requantized_scale_is_the_least_squares_fit():
    rng = np.random.default_rng(1)
    codes = _codes(rng, (6, 512))
    codes[5, 256:] = 0                                         # an all-zero block
    scales = rng.uniform(0.01, 0.1, (6, 8)).astype(np.float32)  # g = 64: four scales per block
    d = requantize_block_scales(codes, scales, 64)
    assert d.shape == (6, 2) and d[5, 1] == 0
    w = codes * np.repeat(scales, 64, axis=1)
    for r in range(5):
        for b in range(2):
            c, x = codes[r, b * 256:(b + 1) * 256].astype(np.float64), w[r, b * 256:(b + 1) * 256]
            err = lambda s: np.sum((x - s * c) ** 2)
            assert err(d[r, b]) <= min(err(d[r, b] * 1.001), err(d[r, b] * 0.999))
            np.testing.assert_allclose(d[r, b], (x * c).sum() / (c * c).sum(), rtol=1e-6)
    # constant scale per block: the fit returns it unchanged
    same = np.repeat(scales[:, ::4], 4, axis=1)
    np.testing.assert_allclose(requantize_block_scales(codes, same, 64)[:5], same[:5, ::4], rtol=1e-6)
