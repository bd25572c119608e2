"""BitCPMForCausalLM on MindFormers' LLaMA: equivalences, MiniCPM scalings, quantized layers."""
import math

import numpy as np
import pytest
import mindspore as ms
from mindformers.models.llama import LlamaConfig, LlamaForCausalLM

from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
from bitcpm_ms.models.flops import count_params
from bitcpm_ms.quant import TernaryLinear, quantized_layer_names

DIMS = dict(batch_size=2, seq_length=16, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2,
            vocab_size=96, intermediate_size=96)
CPU = dict(use_flash_attention=False, fused_rms_norm=False, use_rope_slice=True, compute_dtype="float32",
           layernorm_compute_type="float32", softmax_compute_type="float32", rotary_dtype="float32",
           param_init_type="float32", residual_dtype="float32")
PROJ = ["attention.wq", "attention.wk", "attention.wv", "attention.wo",
        "feed_forward.w1", "feed_forward.w2", "feed_forward.w3"]


def _llama(**kw):
    return LlamaForCausalLM(LlamaConfig(**DIMS, **CPU, **kw))


def _logits(net, ids):
    net.set_train(False)
    return net(ms.Tensor(ids))[0].asnumpy()


def _copy_weights(src, dst, scale=None):
    """Copy parameters by name; scale: {name_suffix: factor} multiplies the copied value."""
    dst_params = {p.name: p for p in dst.get_parameters()}
    for p in src.get_parameters():
        value = p.asnumpy()
        for suffix, factor in (scale or {}).items():
            if p.name.endswith(suffix):
                value = value * factor
        dst_params[p.name].set_data(ms.Tensor(value))


@pytest.fixture(scope="module")
def ids():
    return np.random.default_rng(0).integers(0, 96, (2, 16)).astype(np.int32)


def test_neutral_scalings_reproduce_plain_llama_exactly(ids):
    llama = _llama()
    cfg = BitCPMConfig(**DIMS, scale_emb=1, scale_depth=math.sqrt(2), dim_model_base=64)
    bit = BitCPMForCausalLM(cfg)
    assert sorted(p.name for p in bit.get_parameters()) == sorted(p.name for p in llama.get_parameters())
    _copy_weights(llama, bit)
    np.testing.assert_array_equal(_logits(bit, ids), _logits(llama, ids))


def test_minicpm_scalings_equal_rescaled_llama_weights(ids):
    """emb*s, h + c*branch, logits of h*(b/H) == LLaMA with E*s, wo*c, w2*c, lm_head*(b/H)."""
    s, depth, base = 12.0, 1.4, 16
    c = depth / math.sqrt(DIMS["num_layers"])
    bit = BitCPMForCausalLM(BitCPMConfig(**DIMS, scale_emb=s, scale_depth=depth, dim_model_base=base))
    llama = _llama()
    _copy_weights(bit, llama, scale={"tok_embeddings.embedding_weight": s, "attention.wo.weight": c,
                                     "feed_forward.w2.weight": c, "lm_head.weight": base / 64})
    np.testing.assert_allclose(_logits(bit, ids), _logits(llama, ids), rtol=1e-4, atol=1e-5)


def test_cpu_safe_settings_are_chosen_on_cpu():
    cfg = BitCPMConfig(**DIMS, use_flash_attention=True, fused_rms_norm=True, compute_dtype="bfloat16")
    assert cfg.use_flash_attention is False and cfg.fused_rms_norm is False and cfg.use_rope_slice is True
    assert cfg.compute_dtype == ms.float32
    keep = BitCPMConfig(**DIMS, use_flash_attention=True, fused_rms_norm=True, cpu_safe=False)
    assert keep.use_flash_attention is True and keep.fused_rms_norm is True


def test_quantized_model_swaps_seven_projections_per_layer_only():
    cfg = BitCPMConfig(**DIMS, qat_config={"group_size": 32})
    net = BitCPMForCausalLM(cfg)
    names = quantized_layer_names(net)
    expected = sorted(f"model.layers.{i}.{p}" for i in range(DIMS["num_layers"]) for p in PROJ)
    assert names == expected
    cells = dict(net.cells_and_names())
    assert not isinstance(cells["lm_head"], TernaryLinear)
    assert not any("tok_embeddings" in n for n in names)
    # parameters are unchanged in names and count: checkpoints stay 1:1 with LLaMA
    assert sorted(p.name for p in net.get_parameters()) == sorted(p.name for p in _llama().get_parameters())
    assert sum(int(np.prod(p.shape)) for p in net.trainable_params()) == count_params(cfg).total


def test_head_can_be_quantized_on_request():
    net = BitCPMForCausalLM(BitCPMConfig(**DIMS, qat_config={"group_size": 32, "quantize_lm_head": True}))
    assert "lm_head" in quantized_layer_names(net)


def test_tied_embeddings_share_one_parameter(ids):
    cfg = BitCPMConfig(**DIMS, tie_word_embeddings=True, scale_emb=12, dim_model_base=16)
    net = BitCPMForCausalLM(cfg)
    names = [p.name for p in net.trainable_params()]
    assert "lm_head.weight" not in names and "model.tok_embeddings.embedding_weight" in names
    assert sum(int(np.prod(p.shape)) for p in net.trainable_params()) == count_params(cfg).total
    assert np.isfinite(_logits(net, ids)).all()


def test_qat_forward_differs_from_full_precision_and_training_loss_is_finite(ids):
    fp = BitCPMForCausalLM(BitCPMConfig(**DIMS))
    q = BitCPMForCausalLM(BitCPMConfig(**DIMS, qat_config={"group_size": 32}))
    _copy_weights(fp, q)
    assert not np.allclose(_logits(fp, ids), _logits(q, ids))
    q.set_train(True)
    train_ids = np.random.default_rng(1).integers(0, 96, (2, 17)).astype(np.int32)
    loss = float(q(ms.Tensor(train_ids)).asnumpy())
    assert np.isfinite(loss) and abs(loss - math.log(96)) < 1.0


def test_bad_model_configs():
    with pytest.raises(ValueError, match="scale_emb"):
        BitCPMConfig(**DIMS, scale_emb=0)
    with pytest.raises(ValueError, match="n_kv_heads"):
        BitCPMConfig(**{**DIMS, "n_kv_heads": 3})
    with pytest.raises(ValueError, match="does not divide"):
        BitCPMForCausalLM(BitCPMConfig(**DIMS, qat_config={"group_size": 40}))
    with pytest.raises(ValueError, match="unknown key"):
        BitCPMForCausalLM(BitCPMConfig(**DIMS, qat_config={"group_sise": 32}))
    with pytest.raises(TypeError, match="BitCPMConfig"):
        BitCPMForCausalLM(LlamaConfig(**DIMS))


def test_fused_cpu_ops_reproduce_plain_llama_within_float32(ids):
    """With cpu_fused_ops (bitcpm_ms.fused) the neutral-scaling model equals MindFormers' LLaMA up
    to float32 rounding (the fused kernels sum in another order), in logits and training loss."""
    llama = _llama()
    bit = BitCPMForCausalLM(BitCPMConfig(**DIMS, scale_emb=1, scale_depth=math.sqrt(2), dim_model_base=64,
                                         cpu_fused_ops=True))
    assert any("Fused" in type(c).__name__ for _, c in bit.cells_and_names())
    _copy_weights(llama, bit)
    np.testing.assert_allclose(_logits(bit, ids), _logits(llama, ids), rtol=1e-5, atol=1e-5)
    train_ids = ms.Tensor(np.random.default_rng(2).integers(1, 96, (2, 17)).astype(np.int32))
    llama.set_train(True)
    bit.set_train(True)
    assert abs(float(bit(train_ids).asnumpy()) - float(llama(train_ids).asnumpy())) < 1e-5
