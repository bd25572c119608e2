"""HF MiniCPM <-> bitcpm-ms conversion: exact latent round trip, pseudo-quantized export reproduces
the QAT forward in a plain full-precision model, clear errors."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms

from bitcpm_ms.app import hf as hc
from bitcpm_ms.models.hf_adapter import hf_config_to_model_config, hf_to_ms_name, ms_to_hf_name
from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
from bitcpm_ms.quant import QuantConfig

from ..helpers import ROOT, TINY_YAML

DIMS = dict(batch_size=1, seq_length=16, hidden_size=64, num_layers=2, num_heads=4, n_kv_heads=2,
            vocab_size=96, intermediate_size=128, scale_emb=12, scale_depth=1.4, dim_model_base=16)


def _params(net):
    return {p.name: p.asnumpy() for p in net.get_parameters()}


def test_name_maps_cover_every_parameter_and_invert():
    net = BitCPMForCausalLM(BitCPMConfig(**DIMS))
    for name in _params(net):
        assert hf_to_ms_name(ms_to_hf_name(name)) == name
    assert ms_to_hf_name("model.layers.3.attention.wq.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert ms_to_hf_name("model.tok_embeddings.embedding_weight") == "model.embed_tokens.weight"


def test_latent_round_trip_is_exact(tmp_path):
    quant = QuantConfig(group_size=32)
    net = BitCPMForCausalLM(BitCPMConfig(**DIMS, qat_config=quant.to_dict()))
    params = _params(net)
    hf_cfg = hc.model_config_to_hf_config(DIMS, quant, "latent")
    hc.write_hf_dir(str(tmp_path / "hf"), hc.ms_to_hf_params(params, quant, "latent"), hf_cfg)
    back = hc.hf_to_ms_params(hc.read_hf_weights(str(tmp_path / "hf")))
    assert sorted(back) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(back[k], params[k])
    mc = hf_config_to_model_config(json.load(open(tmp_path / "hf" / "config.json")))
    for key in ("hidden_size", "num_layers", "num_heads", "n_kv_heads", "scale_emb", "scale_depth", "dim_model_base"):
        assert mc[key] == DIMS[key]


def test_pseudo_quantized_export_runs_as_plain_model_with_qat_logits(tmp_path):
    quant = QuantConfig(group_size=32)
    qat = BitCPMForCausalLM(BitCPMConfig(**DIMS, qat_config=quant.to_dict()))
    tensors = hc.ms_to_hf_params(_params(qat), quant, "pseudo_quantized")
    fp = BitCPMForCausalLM(BitCPMConfig(**DIMS))                    # no quantizer ops at all
    ms.load_param_into_net(fp, {k: ms.Parameter(ms.Tensor(v), name=k)
                                for k, v in hc.hf_to_ms_params(tensors).items()}, strict_load=True)
    ids = ms.Tensor(np.random.default_rng(0).integers(0, 96, (1, 16)).astype(np.int32))
    qat.set_train(False)
    fp.set_train(False)
    np.testing.assert_allclose(fp(ids)[0].asnumpy(), qat(ids)[0].asnumpy(), rtol=1e-4, atol=1e-5)
    # quantized projections hold 3 distinct magnitudes per group; embeddings stay latent
    wq = tensors["model.layers.0.self_attn.q_proj.weight"][0, :32]
    assert len(np.unique(np.abs(wq))) <= 2
    np.testing.assert_array_equal(tensors["model.embed_tokens.weight"],
                                  _params(qat)["model.tok_embeddings.embedding_weight"])


def test_cli_round_trip_through_hf(small_dataset, tmp_path):
    """to_hf (latent) -> from_hf -> the same weights, with the recorded quantizer switched back on."""
    from bitcpm_ms.app.config import load_config
    from bitcpm_ms.app.artifacts import build_model
    ds = small_dataset[0]
    ov = ["--tokenizer", os.path.join(str(ds), "tokenizer.model")]
    net = build_model(load_config(TINY_YAML))
    ckpt = tmp_path / "qat.ckpt"
    ms.save_checkpoint(net, str(ckpt))
    run = lambda *a: subprocess.run([sys.executable, os.path.join(ROOT, "run", "convert_hf.py"), *a],
                                    capture_output=True, text=True, cwd=ROOT)
    res = run("to_hf", "--config", TINY_YAML, "--checkpoint", str(ckpt), "--output", str(tmp_path / "hf"),
              "--flavour", "latent", *ov)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.load(open(tmp_path / "hf" / "config.json"))["architectures"] == ["MiniCPMForCausalLM"]
    res = run("from_hf", "--hf_dir", str(tmp_path / "hf"), "--output", str(tmp_path / "back"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "run_bitcpm.py --config" in res.stdout
    back = ms.load_checkpoint(str(tmp_path / "back" / "model.ckpt"))
    for p in net.get_parameters():
        np.testing.assert_array_equal(back[p.name].asnumpy(), p.asnumpy())
    imported = load_config(str(tmp_path / "back" / "config.yaml"))
    assert imported.quant.enabled is True and imported.quant.group_size == load_config(TINY_YAML).quant.group_size
    assert imported.model.model_config.num_layers == 4
    res = run("to_hf", "--config", TINY_YAML, "--checkpoint", str(ckpt), "--output", str(tmp_path / "hf"), *ov)
    assert res.returncode == 2 and "not empty" in res.stderr


def test_bad_inputs(tmp_path):
    with pytest.raises(hc.ConversionError, match="unknown Hugging Face parameter"):
        hc.hf_to_ms_params({"model.layers.0.mlp.experts.0.weight": np.zeros(2)})
    with pytest.raises(hc.ConversionError, match="does not exist"):
        hc.read_hf_weights(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(hc.ConversionError, match="no \\*.safetensors"):
        hc.read_hf_weights(str(tmp_path / "empty"))
    with pytest.raises(hc.ConversionError, match="lacks"):
        hf_config_to_model_config({"hidden_size": 8})


def test_to_hf_writes_every_loader_key_and_the_tokenizer_files(small_dataset, tmp_path):
    """config.json carries what llama.cpp's convert_hf_to_gguf.py and HF's MiniCPM loader read
    (context length and rope theta were missing once: llama.cpp refused the converted file), plus
    tokenizer_config.json / generation_config.json; the directory gives our token ids as transformers'
    LlamaTokenizer reads it (always, through HFTokenizer) and through AutoTokenizer where installed."""
    from bitcpm_ms.app.config import load_config
    from bitcpm_ms.app.artifacts import build_model
    from bitcpm_ms.data.tokenizer import load_sentencepiece
    from bitcpm_ms.data.hf_tokenizer import HFTokenizer, load_tokenizer
    ds, _, _, docs = small_dataset
    ov = {"model.model_config.hidden_size": 64, "model.model_config.num_layers": 2, "quant.group_size": 32,
          "model.model_config.seq_length": 32, "model.model_config.vocab_size": 512,
          "model.model_config.intermediate_size": None, "model.model_config.dim_model_base": 16}
    cfg = load_config(TINY_YAML, ov)
    ms.save_checkpoint(build_model(cfg), str(tmp_path / "m.ckpt"))
    tok = os.path.join(str(ds), "tokenizer.model")
    hc.to_hf(load_config(TINY_YAML, ov), str(tmp_path / "m.ckpt"), str(tmp_path / "hf"), tok)
    conf = json.load(open(tmp_path / "hf" / "config.json"))
    want = {"max_position_embeddings": 32, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
            "tie_word_embeddings": False, "torch_dtype": "float32", "intermediate_size": 256,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-6, "scale_emb": 12, "dim_model_base": 16}
    assert {k: conf.get(k) for k in want} == want
    tc = json.load(open(tmp_path / "hf" / "tokenizer_config.json"))
    assert (tc["add_bos_token"], tc["add_eos_token"], tc["add_prefix_space"]) == (False, False, False)
    assert (tc["bos_token"], tc["eos_token"], tc["unk_token"], tc["pad_token"]) == ("<s>", "</s>", "<unk>", "<pad>")
    assert json.load(open(tmp_path / "hf" / "generation_config.json")) == \
        {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    assert tc["tokenizer_class"] == "LlamaTokenizer" and tc["legacy"] is True and tc["split_special_tokens"] is True
    sp = load_sentencepiece(tok)
    texts = docs[:20] + [" leading  spaces\n\nand a literal </s> <s>", "数字 12345"]
    # Without transformers (absent on a clean install): HFTokenizer reads the directory with the rules
    # of transformers' slow LlamaTokenizer (tests/data/test_hf_tokenizer.py checks it against
    # transformers 4.46.3, ids and decodes), so this part holds wherever the suite runs.
    hf_dir = load_tokenizer(str(tmp_path / "hf"))
    assert isinstance(hf_dir, HFTokenizer)
    for text in texts:
        assert hf_dir.encode(text) == sp.encode(text), text
        assert hf_dir.decode(sp.encode(text)) == text
    # Where transformers is installed, AutoTokenizer itself, fast and slow.
    if importlib.util.find_spec("transformers") is not None:
        import transformers
        for fast in (True, False):
            t = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"), use_fast=fast)
            for text in texts:
                assert t.encode(text) == sp.encode(text), (fast, text)
                assert t.decode(sp.encode(text)) == text
