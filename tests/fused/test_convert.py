"""apply_cpu_fusions on BitCPM models: which modules are swapped, names kept, unsupported modules
left alone, the fused model equal to the unfused one within float32 rounding (loss, gradients, and
20 training steps), and FusionConfig parsing."""
import numpy as np
import pytest
import mindspore as ms
from mindformers.core.optim import AdamW
from mindformers.models.llama.llama_layer import LlamaRMSNorm
from mindformers.models.llama.llama_transformer import LLamaAttention

from bitcpm_ms.errors import ConfigError
from bitcpm_ms.fused import FusionConfig, apply_cpu_fusions
from bitcpm_ms.fused.cells import (FusedCrossEntropyLoss, FusedLlamaAttention, FusedLlamaFeedForward,
                                   FusedLlamaRMSNorm)
from bitcpm_ms.fused.ops import BlasLinearMatMul
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
from bitcpm_ms.training import BitCPMTrainOneStepCell

DIMS = dict(batch_size=3, seq_length=33, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2,
            vocab_size=301, intermediate_size=96, scale_emb=12, scale_depth=1.4, dim_model_base=16)


def build(fused, **kw):
    return BitCPMForCausalLM(BitCPMConfig(**{**DIMS, **kw}, cpu_fused_ops=fused))


def same_weights(src, dst):
    dst_params = {p.name: p for p in dst.get_parameters()}
    assert sorted(dst_params) == sorted(p.name for p in src.get_parameters())
    for p in src.get_parameters():
        dst_params[p.name].set_data(p.data.copy())


def batch(seed=0, n=3):
    """Rows following next = prev + 3 (mod vocab) from random starts: learnable in a few steps."""
    starts = np.random.default_rng(seed).integers(3, DIMS["vocab_size"], (n, 1))
    return ms.Tensor((starts + 3 * np.arange(DIMS["seq_length"] + 1)) % DIMS["vocab_size"], ms.int32)


def test_every_module_kind_is_swapped_and_names_are_kept():
    net = build(True, qat_config={"group_size": 32})
    kinds = {}
    for name, cell in net.cells_and_names():
        kinds.setdefault(type(cell), []).append(name)
    assert len(kinds[FusedLlamaAttention]) == 2 and len(kinds[FusedLlamaFeedForward]) == 2
    assert len(kinds[FusedLlamaRMSNorm]) == 5                      # 2 per layer + the final norm
    assert kinds[FusedCrossEntropyLoss] == ["loss"]
    assert LLamaAttention not in kinds and LlamaRMSNorm not in kinds
    assert len(kinds[BlasLinearMatMul]) == 2 * 7 + 1                # every projection and the head
    plain = build(False, qat_config={"group_size": 32})
    assert sorted(p.name for p in net.get_parameters()) == sorted(p.name for p in plain.get_parameters())


def test_fused_model_matches_unfused_loss_and_gradients():
    plain, fused = build(False, qat_config={"group_size": 32}), build(True, qat_config={"group_size": 32})
    same_weights(plain, fused)
    ids = batch()
    out = {}
    for key, net in (("plain", plain), ("fused", fused)):
        net.set_train(True)
        loss, grads = ms.value_and_grad(net, None, net.trainable_params())(ids)
        out[key] = (float(loss.asnumpy()), [g.asnumpy() for g in grads])
    assert abs(out["plain"][0] - out["fused"][0]) <= 2e-6 * abs(out["plain"][0])
    for p, a, b in zip(plain.trainable_params(), out["plain"][1], out["fused"][1]):
        err = float(np.abs(a - b).max() / (np.abs(a).max() + 1e-12))
        assert err < 2e-5, f"{p.name}: relative gradient difference {err:.1e}"


def test_twenty_training_steps_give_the_same_losses():
    """Fused ops on and off: 20 AdamW steps with clipping (our wrapper), losses equal to float32
    rounding accumulated over the run."""
    losses = {}
    plain = build(False, qat_config={"group_size": 32})
    for fused in (False, True):
        net = build(fused, qat_config={"group_size": 32})
        same_weights(plain, net)
        net.set_train(True)
        step = BitCPMTrainOneStepCell(net, AdamW(net.trainable_params(), learning_rate=3e-3), max_grad_norm=1.0)
        step.set_train(True)
        losses[fused] = [float(step(batch(i % 4))[0].asnumpy()) for i in range(20)]
    a, b = np.array(losses[False]), np.array(losses[True])
    assert a[-1] < a[0] - 0.5                                     # it trains
    np.testing.assert_allclose(b, a, rtol=1e-4)


def test_unsupported_attention_keeps_the_op_chain():
    net = build(True, qkv_concat=True)
    cells = dict(net.cells_and_names())
    assert isinstance(cells["model.layers.0.attention"], LLamaAttention)      # left alone (fused QKV)
    assert not isinstance(cells["model.layers.0.feed_forward"], FusedLlamaFeedForward)   # fused w1/w3
    assert isinstance(cells["model.layers.0.attention_norm"], FusedLlamaRMSNorm)
    net.set_train(True)
    assert np.isfinite(float(net(batch()).asnumpy()))


def test_nothing_changes_outside_cpu_standalone():
    net = build(False)
    ms.set_auto_parallel_context(parallel_mode="semi_auto_parallel")
    try:
        assert apply_cpu_fusions(net, True) == []
    finally:
        ms.reset_auto_parallel_context()
    assert not any("Fused" in type(c).__name__ for _, c in net.cells_and_names())


def test_selected_fusions_only():
    net = build(["cross_entropy"])
    names = [type(c).__name__ for _, c in net.cells_and_names() if "Fused" in type(c).__name__]
    assert names == ["FusedCrossEntropyLoss", "FusedCrossEntropy"]


def test_rms_norm_falls_back_for_float16():
    norm = LlamaRMSNorm(8, eps=1e-6, fused_kernel=False)
    fused = FusedLlamaRMSNorm(LlamaRMSNorm(8, eps=1e-6, fused_kernel=False))
    x = ms.Tensor(np.random.default_rng(3).standard_normal((2, 8)), ms.float16)
    np.testing.assert_array_equal(fused(x).asnumpy(), norm(x).asnumpy())


def test_fusion_config_values():
    assert FusionConfig.from_value(True).enabled() == ["cross_entropy", "attention", "rms_norm", "swiglu", "matmul"]
    assert FusionConfig.from_value(None).enabled() == []
    assert FusionConfig.from_value(["swiglu"]).enabled() == ["swiglu"]
    assert FusionConfig.from_value({"attention": False}).enabled() == ["cross_entropy", "rms_norm", "swiglu", "matmul"]
    with pytest.raises(ConfigError, match="unknown fusion.*'atention'"):
        FusionConfig.from_value(["atention"])
    with pytest.raises(ConfigError, match="true or false"):
        FusionConfig.from_value({"attention": "yes"})
    with pytest.raises(ConfigError, match="cpu_fused_ops must be"):
        FusionConfig.from_value(3)
