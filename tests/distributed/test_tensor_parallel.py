"""Tensor parallelism, checked without devices.

1. Shard-local quantization (what each rank computes under semi-auto parallel) equals the
   matching slice of global quantization, for column-parallel splits (any group size) and
   row-parallel splits (group sizes dividing in/mp); g=-1 in row-parallel layers differs and is
   exactly global quantization with g = in/mp.
2. Building BitCPMForCausalLM (QAT on) under a simulated semi-auto context with
   parallel_config mp=2 keeps every strategy MindFormers' LlamaForCausalLM sets, and gives each
   quantizer op the strategy of its weight.
"""
import numpy as np
import pytest

from bitcpm_ms.parallel import (check_tp_divisibility, local_fake_quant, local_quantize, row_parallel_deviation,
                                shards, split_kind)
from bitcpm_ms.quant import QuantConfig
from bitcpm_ms.quant.primitives import fake_quant_weight, quantize_weight

OUT, IN = 48, 96


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@pytest.fixture(scope="module")
def weight():
    rng = np.random.default_rng(0)
    # heavy-tailed rows with very different magnitudes, so wrong scales show
    return (rng.standard_t(3, (OUT, IN)) * rng.uniform(0.005, 0.05, (OUT, 1))).astype(np.float32)


@pytest.mark.parametrize("space", ["ternary", "5-value"])
@pytest.mark.parametrize("mp", [2, 3, 4])
def test_column_parallel_slices_equal_global_quantization_for_every_group_size(weight, mp, space):
    for g in _divisors(IN) + [-1]:
        cfg = QuantConfig(group_size=g, quant_space=space)
        codes, scales = quantize_weight(weight, cfg)
        rows = OUT // mp
        for r, (c, s) in enumerate(local_quantize(weight, cfg, mp, "column")):
            np.testing.assert_array_equal(c, codes[r * rows:(r + 1) * rows])
            np.testing.assert_array_equal(s, scales[r * rows:(r + 1) * rows])
        np.testing.assert_array_equal(local_fake_quant(weight, cfg, mp, "column"), fake_quant_weight(weight, cfg))


@pytest.mark.parametrize("space", ["ternary", "5-value"])
@pytest.mark.parametrize("mp", [2, 3, 4])
def test_row_parallel_slices_equal_global_quantization_when_g_divides_in_over_mp(weight, mp, space):
    local_in = IN // mp
    for g in _divisors(local_in):
        cfg = QuantConfig(group_size=g, quant_space=space)
        codes, scales = quantize_weight(weight, cfg)
        groups = local_in // g
        for r, (c, s) in enumerate(local_quantize(weight, cfg, mp, "row")):
            np.testing.assert_array_equal(c, codes[:, r * local_in:(r + 1) * local_in])
            np.testing.assert_array_equal(s, scales[:, r * groups:(r + 1) * groups])
        assert row_parallel_deviation(weight, cfg, mp)["rel_weight_err"] == 0.0


@pytest.mark.parametrize("mp", [2, 4])
def test_row_parallel_per_channel_is_group_in_over_mp_not_per_channel(weight, mp):
    per_channel = QuantConfig(group_size=-1)
    local = local_fake_quant(weight, per_channel, mp, "row")
    # shard-local g=-1 == global quantization with g = in/mp ...
    np.testing.assert_array_equal(local, fake_quant_weight(weight, QuantConfig(group_size=IN // mp)))
    # ... which is not global per-channel quantization
    dev = row_parallel_deviation(weight, per_channel, mp)
    assert dev["rel_weight_err"] > 0.01 and dev["code_mismatch_frac"] > 0 and dev["max_scale_ratio_dev"] > 0.05
    # column-parallel g=-1 is exact (a row is never split)
    np.testing.assert_array_equal(local_fake_quant(weight, per_channel, mp, "column"),
                                  fake_quant_weight(weight, per_channel))


def test_split_helpers():
    assert split_kind("model.layers.3.attention.wq") == "column"
    assert split_kind("model.layers.3.feed_forward.w2") == "row"
    with pytest.raises(ValueError):
        split_kind("lm_head")
    with pytest.raises(ValueError, match="not divisible"):
        shards(np.zeros((6, 8), np.float32), 4, "column")
    cfg = dict(hidden_size=4096, num_heads=32, n_kv_heads=2, intermediate_size=16384)
    assert check_tp_divisibility(cfg, 2, 128) == []
    assert check_tp_divisibility(dict(cfg, n_kv_heads=8), 8, 128) == []   # w2 local in 2048, wo 512
    assert any("feed_forward.w2" in p for p in check_tp_divisibility(
        dict(cfg, n_kv_heads=8, intermediate_size=11008), 8, 128))     # 11008/8 = 1376, not a multiple of 128
    assert any("n_kv_heads" in p for p in check_tp_divisibility(cfg, 4, 128))   # 2 KV heads: mp <= 2


# ---------------------------------------------------------------- strategies after the layer swap
SMALL = dict(batch_size=2, seq_length=32, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2,
             intermediate_size=128, vocab_size=512, use_flash_attention=False, fused_rms_norm=False,
             use_rope_slice=True, compute_dtype="float32", layernorm_compute_type="float32",
             softmax_compute_type="float32", rotary_dtype="float32", param_init_type="float32")


def _counterpart(name, bit):
    """Where an op of the plain LLaMA lives in BitCPM: same path, inside ScaleOutput (.cell), or
    inside ScaledResidualAdd (layer.add -> layer.add.add)."""
    wrapped = [name.replace(f"model.{c}.", f"model.{c}.cell.") for c in ("tok_embeddings", "norm_out")
               if name.startswith(f"model.{c}.")]
    for cand in wrapped + [name, name + ".add"]:
        if cand in bit:
            return cand
    return None


@pytest.mark.parametrize("dp,mp,seq_par", [(1, 2, False), (2, 2, True), (1, 4, False)])
def test_bitcpm_keeps_every_llama_strategy_and_quantizers_follow_the_weight(dp, mp, seq_par):
    from mindformers.models.llama.llama import LlamaForCausalLM
    from mindformers.models.llama.llama_config import LlamaConfig
    from mindformers.modules.transformer.transformer import TransformerOpParallelConfig

    from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
    from bitcpm_ms.parallel.strategies import (primitive_strategies, primitives_without_strategy,
                                               simulated_semi_auto)
    from bitcpm_ms.quant.linear import TernaryLinear

    cfg = dict(SMALL, num_heads=4 * mp // 2 if mp > 2 else 4, n_kv_heads=mp)
    with simulated_semi_auto(dp * mp):
        pc = TransformerOpParallelConfig(data_parallel=dp, model_parallel=mp, use_seq_parallel=seq_par)
        ref = LlamaForCausalLM(LlamaConfig(parallel_config=pc, **cfg))
        bit = BitCPMForCausalLM(BitCPMConfig(parallel_config=pc, scale_emb=12, scale_depth=1.4, dim_model_base=32,
                                             cpu_safe=True, qat_config={"group_size": 16}, **cfg))
        ref_s, bit_s = primitive_strategies(ref), primitive_strategies(bit)
        unset = primitives_without_strategy(bit)
        ref_unset = set(primitives_without_strategy(ref))
        layers = [(n, c) for n, c in bit.cells_and_names() if isinstance(c, TernaryLinear)]

    assert len(ref_s) > 50
    missing = {n: s for n, s in ref_s.items() if _counterpart(n, bit_s) is None}
    assert not missing, f"strategies lost in BitCPM: {missing}"
    changed = {n: (s, bit_s[_counterpart(n, bit_s)]) for n, s in ref_s.items() if bit_s[_counterpart(n, bit_s)] != s}
    assert not changed, f"strategies changed: {changed}"
    # sharded matmuls really are sharded (the context took effect)
    assert ref_s["model.layers.0.attention.wq.matmul"] == ((dp, 1), (mp, 1))
    assert ref_s["model.layers.0.attention.wo.matmul"] == ((dp, mp), (1, mp))

    assert len(layers) == 7 * SMALL["num_layers"]
    for name, layer in layers:
        w_strategy = bit_s[f"{name}.matmul"][1]
        grouped = (w_strategy[0], w_strategy[1], 1)
        kind = split_kind(name)
        assert w_strategy == ((mp, 1) if kind == "column" else (1, mp)), name
        q = f"{name}.weight_quantizer"
        for op in ("abs", "reduce", "round"):
            assert bit_s[f"{q}.{op}"] == (grouped,), (name, op)
        for op in ("div", "mul"):
            assert bit_s[f"{q}.{op}"] == (grouped, grouped), (name, op)
        assert bit_s[f"{q}.floor_eps"] == (grouped, ())
        # the grouped view is the weight's first user and is split exactly like the weight
        assert bit_s[f"{name}.weight_view"] == (w_strategy,), name
    # every op BitCPM adds carries a strategy (semi-auto parallel gives a primitive without one
    # MindSpore's batch-parallel default, not its neighbour's layout); only reshapes have none
    new_unset = sorted(n for n in unset if n.replace(".cell.", ".") not in ref_unset
                       and not n.endswith((".reshape", ".shape", ".cast", ".weight_unview")))
    assert new_unset == [], new_unset
    # ... and it is the layout of what they follow: the embedding's output (Gather: ids' split,
    # then the table's hidden split), the final norm's input, each residual add's branch input
    gather = ref_s["model.tok_embeddings.gather"]
    assert bit_s["model.tok_embeddings.mul"] == (gather[1] + gather[0][1:], ())
    norm = ref_s.get("model.norm_out.norm") or ref_s["model.norm_out.mul2"]
    assert bit_s["model.norm_out.mul"] == (norm[0], ())
    for i in range(SMALL["num_layers"]):
        add = ref_s[f"model.layers.{i}.add"]
        assert bit_s[f"model.layers.{i}.add.add"] == add and bit_s[f"model.layers.{i}.add.mul"] == (add[1], ())


@pytest.mark.parametrize("kw", [dict(data_parallel=2, context_parallel=2, context_parallel_algo="ulysses_cp"),
                                pytest.param(dict(data_parallel=2, model_parallel=2, use_seq_parallel=True,
                                                  vocab_emb_dp=False), marks=pytest.mark.slow)],
                         ids=["ulysses-cp2", "vocab-split-seq-par"])
def test_scale_multiplies_take_the_layout_of_what_they_scale(kw):
    """Under context parallelism the embedding output is split (dp, cp, 1): the MiniCPM embedding
    scale keeps that split (a batch-parallel default would all-gather the sequence and split it
    again); with a vocabulary-split embedding it keeps the Gather's (dp, 1, 1)."""
    from mindformers.modules.transformer.transformer import TransformerOpParallelConfig

    from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
    from bitcpm_ms.parallel.strategies import primitive_strategies, simulated_semi_auto

    n = kw["data_parallel"] * kw.get("model_parallel", 1) * kw.get("context_parallel", 1)
    with simulated_semi_auto(n):
        pc = TransformerOpParallelConfig(**kw)
        bit = BitCPMForCausalLM(BitCPMConfig(parallel_config=pc, scale_emb=12, scale_depth=1.4, dim_model_base=32,
                                             cpu_safe=True, qat_config={"group_size": 16}, **SMALL))
        s = primitive_strategies(bit)
    dp, cp = kw["data_parallel"], kw.get("context_parallel", 1)
    expected = (dp, cp, 1) if kw.get("vocab_emb_dp", True) else (dp, 1, 1)
    assert s["model.tok_embeddings.mul"] == (expected, ())
    assert s["model.norm_out.mul"] == (s["model.norm_out.cell.mul2"][0], ())
    if cp > 1:   # the first decoder layer reads the scaled embedding in the same layout
        assert s["model.layers.0.attention_norm.square"] == (expected,)
