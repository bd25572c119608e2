"""Real-model semantics on import: MiniCPM4-shaped HF directories (the real 0.5B config shrunk, head_dim
and LongRoPE factors kept) -> `from_hf` -> every forward path of ours against the numpy reference
(`models/reference.py`), plus the named errors of bad input.

Sequences are 320 tokens (LongRoPE changes every position but 0; the real code's difference is
largest far from 0)."""
import json
import os
import shutil

import numpy as np
import mindspore as ms
import pytest

from bitcpm_ms.app.config import load_config
from bitcpm_ms.app.artifacts import load_model
from bitcpm_ms.app.hf_import import from_hf
from bitcpm_ms.app.hf_weights import bf16_to_f32, f32_to_bf16
from bitcpm_ms.errors import ConversionError
from bitcpm_ms.models.reference import minicpm_logits

from ..inference.test_decoding import Recording
from .hf_fixtures import REAL_05B, random_hf_weights, shrunk_config, write_hf_model

SEQ = 320
VOCAB = 384


@pytest.fixture(scope="module")
def tokenizer_dir(small_dataset, tmp_path_factory):
    """A tokenizer.model (the small corpus' SentencePiece model) standing in for the real one."""
    ds = small_dataset[0]
    out = tmp_path_factory.mktemp("tok")
    shutil.copyfile(os.path.join(str(ds), "tokenizer.model"), out / "tokenizer.model")
    return str(out)


def _import(tmp, tokenizer_dir, pseudo=False, group_size=-1, dtype="F32", shards=1, **over):
    cfg = shrunk_config(REAL_05B, vocab=VOCAB)
    cfg.update(pad_token_id=2, **over)
    weights = random_hf_weights(cfg, seed=3, pseudo_quantized=pseudo, group_size=group_size)
    if dtype == "BF16":            # what the file holds, exactly
        weights = {k: bf16_to_f32(f32_to_bf16(v)) for k, v in weights.items()}
    write_hf_model(str(tmp / "hf"), cfg, weights, dtype=dtype, shards=shards, tokenizer_dir=tokenizer_dir)
    summary = from_hf(str(tmp / "hf"), str(tmp / "out"), seq_length=SEQ)
    return cfg, weights, summary, str(tmp / "out" / "config.yaml")


def _logits(config_path, ids, **overrides):
    config = load_config(config_path, overrides)
    net, _ = load_model(config, config.init_from_checkpoint)
    net.set_train(False)
    return net, net(ms.Tensor(np.asarray(ids, np.int32)[None]))[0].asnumpy().reshape(len(ids), -1)


def _rel(ours, ref):
    return float(np.abs(ours - ref).max() / np.abs(ref).max())


IDS = np.random.default_rng(7).integers(0, VOCAB, SEQ)
IDS[5::7], IDS[3::11] = 2, 0        # </s> (MiniCPM4-8B's pad id) and <unk> are attended to, as in HF


@pytest.fixture(scope="module")
def fp_import(tmp_path_factory, tokenizer_dir):
    return _import(tmp_path_factory.mktemp("fp"), tokenizer_dir)


@pytest.mark.parametrize("fused", [True, False], ids=["fused_cpu_ops", "op_chain"])
def test_full_precision_import_equals_reference(fp_import, fused):
    cfg, weights, summary, path = fp_import
    assert summary["tied"] and not summary["pseudo_quantized"] and summary["rope_scaling"]
    assert "lm_head.weight" not in weights                       # the 0.5B ships none: tied by default
    _, ours = _logits(path, IDS, **{"model.model_config.cpu_fused_ops": fused})
    ref = minicpm_logits(cfg, weights, IDS)
    assert _rel(ours, ref) < 1e-5
    assert np.array_equal(ours.argmax(-1), ref.argmax(-1))
    plain = minicpm_logits(dict(cfg, rope_scaling=None), weights, IDS)
    assert _rel(plain, ref) > 1e-2                               # the test would see LongRoPE dropped
    np.testing.assert_allclose(ours[0], ref[0], rtol=1e-5, atol=1e-5)


def test_config_yaml_carries_the_real_semantics(fp_import):
    cfg, _, _, path = fp_import
    mc = load_config(path).model.model_config
    assert mc.tie_word_embeddings is True and mc.rms_norm_eps == 1e-5 and mc.theta == 10000.0
    assert list(mc.eos_token_id) == [2, 73440] and mc.bos_token_id == 1
    assert mc.rope_scaling["short_factor"] == cfg["rope_scaling"]["short_factor"]
    assert mc.rope_scaling["original_max_position_embeddings"] == 32768
    assert mc.max_position_embedding == 32768 and mc.seq_length == SEQ
    assert load_config(path).quant.enabled is False
    assert os.path.isfile(os.path.join(os.path.dirname(path), "tokenizer", "tokenizer.model"))


@pytest.mark.parametrize("group_size", [-1, 64])
def test_pseudo_quantized_bf16_import_computes_the_published_weights(tmp_path, tokenizer_dir, group_size):
    cfg, weights, summary, path = _import(tmp_path, tokenizer_dir, pseudo=True, group_size=group_size,
                                          dtype="BF16", shards=3)
    assert summary["pseudo_quantized"] and summary["group_size"] == group_size and summary["dtypes"] == ["BF16"]
    config = load_config(path)
    assert config.quant.enabled is True and config.quant.group_size == group_size
    net, ours = _logits(path, IDS)
    ref = minicpm_logits(cfg, weights, IDS)
    assert _rel(ours, ref) < 1e-5 and np.array_equal(ours.argmax(-1), ref.argmax(-1))
    # re-quantizing the published weights with mean|W| (what a naive import does) shrinks every layer
    from bitcpm_ms.quant import QuantConfig, fake_quant_weight
    w = weights["model.layers.0.self_attn.q_proj.weight"]
    naive = fake_quant_weight(w, QuantConfig(group_size=group_size))
    assert 0.6 < np.abs(naive).max() / np.abs(w).max() < 0.8


def test_decode_paths_with_longrope_equal_the_reference(tmp_path, tokenizer_dir):
    """Prefill + one-step decode (fake-quant; packed one op per layer) and multi-step greedy decoding of a
    pseudo-quantized import, against the reference's logits / greedy tokens at positions up to 200."""
    from bitcpm_ms.inference import CachedLM, generate
    from bitcpm_ms.quant.convert import convert_model
    cfg, weights, _, path = _import(tmp_path, tokenizer_dir, pseudo=True, dtype="BF16")
    config = load_config(path)
    net, _ = load_model(config, config.init_from_checkpoint)
    prompt = [int(i) for i in IDS[:180]]

    def check(lm, n=20):
        rec = Recording(lm)
        out = generate(rec, [prompt], max_new_tokens=n)
        seq = prompt + out.tokens[0]
        ref = minicpm_logits(cfg, weights, seq)
        for i, got in enumerate(rec.logits):
            assert _rel(got[0], ref[len(prompt) - 1 + i]) < 1e-4, i
        return out.tokens[0], ref

    fake_tokens, _ = check(CachedLM(net, context=SEQ))
    convert_model(net)
    packed = CachedLM(net, context=SEQ, decode_steps=1)
    assert packed.step_graph.fused_layers
    packed_tokens, ref = check(packed)
    multi = generate(CachedLM(net, context=SEQ, decode_steps=4), [prompt], max_new_tokens=20).tokens[0]
    assert multi == packed_tokens == fake_tokens
    assert [int(t) for t in ref[len(prompt) - 1:-1].argmax(-1)] == multi


# ---------------------------------------------------------------- bad input: named errors, nothing written
def _hf_dir(tmp, tokenizer_dir, cfg=None, weights=None, **kw):
    cfg = cfg or shrunk_config(REAL_05B, vocab=VOCAB)
    weights = weights if weights is not None else random_hf_weights(cfg)
    return write_hf_model(str(tmp / "hf"), cfg, weights, tokenizer_dir=tokenizer_dir, **kw), cfg, weights


@pytest.mark.parametrize("change, match", [
    (lambda c: c["rope_scaling"].update(rope_type="dynamic"), "rope_scaling type 'dynamic' is not supported"),
    (lambda c: c["rope_scaling"].update(short_factor=[1.0] * 16), "short_factor has 16 factors.*head_dim / 2 = 32"),
    (lambda c: c["rope_scaling"].pop("original_max_position_embeddings"), "lacks"),
    (lambda c: c.update(tie_word_embeddings=False), "lacks lm_head.weight"),
])
def test_bad_configs_are_named_errors(tmp_path, tokenizer_dir, change, match):
    cfg = shrunk_config(REAL_05B, vocab=VOCAB)
    weights = random_hf_weights(cfg)
    change(cfg)
    hf, _, _ = _hf_dir(tmp_path, tokenizer_dir, cfg, weights)
    with pytest.raises(ConversionError, match=match):
        from_hf(hf, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_bad_files_are_named_errors(tmp_path, tokenizer_dir):
    hf, cfg, weights = _hf_dir(tmp_path, None)
    with pytest.raises(ConversionError, match="no tokenizer.model"):
        from_hf(hf, str(tmp_path / "out"))
    hf, cfg, weights = _hf_dir(tmp_path, tokenizer_dir, shards=2)
    os.remove(os.path.join(hf, "model-00002-of-00002.safetensors"))
    with pytest.raises(ConversionError, match="lists shard.*00002-of-00002.*not in"):
        from_hf(hf, str(tmp_path / "out"))
    with pytest.raises(ConversionError, match="writes a directory"):
        from_hf(hf, str(tmp_path / "out.ckpt"))
    assert not os.path.exists(tmp_path / "out")


def test_a_float_projection_in_a_pseudo_quantized_file_is_named(tmp_path, tokenizer_dir):
    cfg = shrunk_config(REAL_05B, vocab=VOCAB)
    weights = random_hf_weights(cfg, pseudo_quantized=True)
    weights["model.layers.1.mlp.up_proj.weight"] = random_hf_weights(cfg, seed=9)["model.layers.1.mlp.up_proj.weight"]
    hf, _, _ = _hf_dir(tmp_path, tokenizer_dir, cfg, weights)
    with pytest.raises(ConversionError, match="model.layers.1.mlp.up_proj.weight is not ternary"):
        from_hf(hf, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")
    summary = from_hf(hf, str(tmp_path / "out"), quantized="no")     # or imported as a float model
    assert not summary["pseudo_quantized"]


def test_hf_semantics_of_absent_keys_and_eos_lists():
    from bitcpm_ms.models.hf_adapter import hf_config_to_model_config, model_config_to_hf_config
    mc = hf_config_to_model_config({k: v for k, v in REAL_05B.items()})
    assert mc["tie_word_embeddings"] is True and mc["theta"] == 10000.0 and mc["eos_token_id"] == [2, 73440]
    eight = hf_config_to_model_config(dict(REAL_05B, tie_word_embeddings=False, rms_norm_eps=1e-6))
    assert eight["tie_word_embeddings"] is False and eight["rms_norm_eps"] == 1e-6
    back = model_config_to_hf_config(dict(mc, num_heads=16, seq_length=512))
    assert back["tie_word_embeddings"] is True and back["eos_token_id"] == [2, 73440]
    assert back["rope_scaling"]["rope_type"] == "longrope" and len(back["rope_scaling"]["long_factor"]) == 32
    assert json.loads(json.dumps(back)) == back


# ---------------------------------------------------------------- out again: HF and GGUF keep the semantics
def test_round_trip_keeps_longrope_tying_eos_and_the_chat_tokenizer(tmp_path):
    """A MiniCPM4-shaped directory (LongRoPE, no tie key, eos [2, <|im_end|>], tokenizer with 8 chat tokens
    and a template) -> from_hf -> to_hf and GGUF: every one of those survives."""
    import gguf
    from bitcpm_ms.app.gguf_export import export_gguf
    from bitcpm_ms.app.hf import to_hf
    from ..data.test_hf_tokenizer import ADDED, CHATML, PIECES, make_hf_tokenizer_dir
    tok = make_hf_tokenizer_dir(str(tmp_path / "tok"))
    cfg = shrunk_config(REAL_05B, hidden=256, intermediate=512, vocab=512)     # TQ2_0 rows: 256 weights
    cfg["eos_token_id"] = [2, PIECES]
    weights = {k: bf16_to_f32(f32_to_bf16(v)) for k, v in random_hf_weights(cfg, pseudo_quantized=True).items()}
    write_hf_model(str(tmp_path / "hf"), cfg, weights, dtype="BF16", tokenizer_dir=tok)
    from_hf(str(tmp_path / "hf"), str(tmp_path / "out"), seq_length=64)
    path = str(tmp_path / "out" / "config.yaml")
    config = load_config(path)
    to_hf(config, config.init_from_checkpoint, str(tmp_path / "back"), str(tmp_path / "out" / "tokenizer"))
    back = json.load(open(tmp_path / "back" / "config.json"))
    assert back["rope_scaling"] == cfg["rope_scaling"] and back["tie_word_embeddings"] is True
    assert back["eos_token_id"] == [2, PIECES] and "lm_head.weight" not in weights
    assert json.load(open(tmp_path / "back" / "generation_config.json"))["eos_token_id"] == [2, PIECES]
    tc = json.load(open(tmp_path / "back" / "tokenizer_config.json"))
    assert tc["chat_template"] == CHATML and tc["add_bos_token"] is True
    assert json.load(open(tmp_path / "back" / "added_tokens.json")) == {t: PIECES + i for i, t in enumerate(ADDED)}
    # pseudo-quantized export of the import = the published weights (no x0.69 shrink)
    from bitcpm_ms.app.hf_weights import HFWeights
    out = HFWeights(str(tmp_path / "back"))
    w = weights["model.layers.1.mlp.down_proj.weight"]
    np.testing.assert_allclose(out.get("model.layers.1.mlp.down_proj.weight"), w, rtol=1e-6, atol=0)

    export_gguf(load_config(path), config.init_from_checkpoint, str(tmp_path / "m.gguf"), gguf_type="tq2_0",
                log=lambda *a: None)
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    tensors = {t.name: t for t in reader.tensors}
    for kind in ("long", "short"):
        np.testing.assert_array_equal(np.asarray(tensors[f"rope_factors_{kind}.weight"].data),
                                      np.asarray(cfg["rope_scaling"][f"{kind}_factor"], np.float32))
    # a bf16 per-row scale is an fp16 number: TQ2_0's blocks hold the published weights exactly
    down = tensors["blk.1.ffn_down.weight"]
    np.testing.assert_array_equal(gguf.quants.dequantize(np.asarray(down.data), down.tensor_type),
                                  weights["model.layers.1.mlp.down_proj.weight"])
    field = reader.fields["minicpm.rope.scaling.type"]
    assert bytes(field.parts[field.data[0]]).decode() == "longrope"
    assert "output.weight" not in tensors                        # tied: llama.cpp reuses token_embd
    types = reader.fields["tokenizer.ggml.token_type"]
    assert [int(types.parts[i][0]) for i in types.data[PIECES:PIECES + 8]] == [3] * 8       # CONTROL
    bos = reader.fields["tokenizer.ggml.add_bos_token"]
    assert bool(bos.parts[bos.data[0]][0]) is True


def test_packed_mindir_export_of_a_longrope_import_keeps_its_logits(tmp_path, tokenizer_dir):
    """The exported MindIR (packed kernels, LongRoPE tables as constants) computes the imported model."""
    from bitcpm_ms.app.export import export_packed
    cfg, weights, _, path = _import(tmp_path, tokenizer_dir, pseudo=True, dtype="BF16")
    config = load_config(path, {"model.model_config.seq_length": 96})
    s = export_packed(config, config.init_from_checkpoint, str(tmp_path / "packed"))
    assert s["max_abs_diff_mindir_vs_fake_quant"] <= 1e-4 * s["logit_scale"]
    assert s["max_abs_diff_packed_vs_fake_quant"] <= 1e-4 * s["logit_scale"]
