"""LongRoPE tables (models/rope.py) against the formula of MiniCPM4's modeling code, their place in the
model (every FreqsMgr consumer reads them), and the named errors."""
import math

import numpy as np
import pytest

from bitcpm_ms.errors import ConversionError
from bitcpm_ms.models.rope import RopeScalingError, check_rope_scaling, longrope_mscale, rope_tables

from ..app.hf_fixtures import LONGROPE_05B, LONGROPE_8B


def _longrope(factors, orig=32768):
    return {"rope_type": "longrope", "short_factor": factors, "long_factor": factors,
            "original_max_position_embeddings": orig}


@pytest.mark.parametrize("factors", [LONGROPE_05B, LONGROPE_8B], ids=["0.5b", "8b"])
def test_tables_follow_the_formula_and_leave_position_0_alone(factors):
    d = 2 * len(factors)
    cos, sin = rope_tables(d, 300, 10000.0, _longrope(factors), 32768)
    t = np.arange(300)[:, None].astype(np.float64)
    inv = 1.0 / 10000.0 ** (np.arange(0, d, 2) / d)
    ang = t * inv / np.asarray(factors)                           # float64 formula
    np.testing.assert_allclose(cos, np.cos(np.concatenate([ang, ang], -1)), atol=6e-5)            # float32 angles (HF computes them in float32 too)
    np.testing.assert_allclose(sin, np.sin(np.concatenate([ang, ang], -1)), atol=6e-5)            # float32 angles (HF computes them in float32 too)
    plain_cos, _ = rope_tables(d, 300, 10000.0, None)
    np.testing.assert_array_equal(cos[0], plain_cos[0])
    assert np.abs(cos[1:] - plain_cos[1:]).max() > 0.5            # every later position changes


def test_the_multiplier_and_the_long_factors_past_the_original_context():
    short, long = [1.0] * 4, [2.0] * 4
    scaling = {"rope_type": "longrope", "short_factor": short, "long_factor": long,
               "original_max_position_embeddings": 64}
    assert longrope_mscale(64, 64) == 1.0
    m = math.sqrt(1 + math.log(128 / 64) / math.log(64))
    cos, sin = rope_tables(8, 128, 10000.0, scaling, 128)         # cache longer than the original: long, scaled
    ang = 5 * (1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)) / 2.0
    np.testing.assert_allclose(cos[5], np.cos(np.concatenate([ang, ang])) * m, rtol=1e-6)
    np.testing.assert_allclose(sin[0], 0.0)
    np.testing.assert_allclose(cos[0], m, rtol=1e-7)              # the multiplier applies at position 0 too


@pytest.mark.parametrize("scaling, match", [
    ({"rope_type": "yarn", "factor": 4.0}, "type 'yarn' is not supported"),
    ({"type": "linear", "factor": 2.0}, "type 'linear' is not supported"),
    (_longrope([1.0] * 31), "short_factor has 31 factors, but head_dim 64 needs head_dim / 2 = 32"),
    (dict(_longrope([1.0] * 32), long_factor=[1.0] * 32 + [2.0]), "long_factor has 33 factors"),
    (_longrope([1.0] * 31 + [0.0]), "positive finite"),
    ({"rope_type": "longrope", "short_factor": [1.0] * 32}, "lacks"),
    ("longrope", "must be a mapping"),
])
def test_bad_rope_scaling_is_named(scaling, match):
    with pytest.raises(RopeScalingError, match=match):
        check_rope_scaling(scaling, 64)


def test_model_config_and_network_use_the_tables():
    from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
    cfg = BitCPMConfig(batch_size=1, seq_length=16, hidden_size=128, num_layers=1, num_heads=2, n_kv_heads=2,
                       vocab_size=64, max_position_embedding=32768, rope_scaling=_longrope(LONGROPE_05B))
    net = BitCPMForCausalLM(cfg)
    cos, sin = rope_tables(64, 32768, 10000.0, _longrope(LONGROPE_05B), 32768)
    np.testing.assert_array_equal(net.model.freqs_mgr.freqs_cos.asnumpy(), cos)
    np.testing.assert_array_equal(net.model.freqs_mgr.freqs_sin.asnumpy(), sin)
    with pytest.raises(ValueError, match="head_dim / 2 = 32"):
        BitCPMConfig(hidden_size=128, num_heads=2, num_layers=1, rope_scaling=_longrope([1.0] * 8))
    with pytest.raises(ValueError, match="extend_method"):
        BitCPMConfig(hidden_size=128, num_heads=2, num_layers=1, extend_method="NTK")


def test_gguf_refuses_a_multiplier_llamacpp_does_not_apply():
    from bitcpm_ms.app.gguf_export import longrope_for_gguf
    assert longrope_for_gguf(_longrope(LONGROPE_05B), 64, 32768)["short_factor"] == LONGROPE_05B
    assert longrope_for_gguf(None, 64, 32768) is None
    with pytest.raises(ConversionError, match="scales cos/sin by 1.1180"):
        longrope_for_gguf(_longrope(LONGROPE_05B, orig=4096), 64, 32768)
