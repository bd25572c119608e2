"""HF MiniCPM <-> bitcpm-ms conversion: exact latent round trip, pseudo-quantized export reproduces
the QAT forward in a plain full-precision model, clear errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms

from bitcpm_ms.app import hf as hc
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
        assert hc.hf_to_ms_name(hc.ms_to_hf_name(name)) == name
    assert hc.ms_to_hf_name("model.layers.3.attention.wq.weight") == "model.layers.3.self_attn.q_proj.weight"
    assert hc.ms_to_hf_name("model.tok_embeddings.embedding_weight") == "model.embed_tokens.weight"


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
    mc = hc.hf_config_to_model_config(json.load(open(tmp_path / "hf" / "config.json")))
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


def test_cli_round_trip_through_hf(tmp_path):
    from bitcpm_ms.app.config import load_config
    from bitcpm_ms.app.artifacts import build_model
    net = build_model(load_config(TINY_YAML))
    ckpt = tmp_path / "qat.ckpt"
    ms.save_checkpoint(net, str(ckpt))
    run = lambda *a: subprocess.run([sys.executable, os.path.join(ROOT, "run", "convert_hf.py"), *a],
                                    capture_output=True, text=True, cwd=ROOT)
    res = run("to_hf", "--config", TINY_YAML, "--checkpoint", str(ckpt), "--output", str(tmp_path / "hf"),
              "--flavour", "latent")
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.load(open(tmp_path / "hf" / "config.json"))["architectures"] == ["MiniCPMForCausalLM"]
    res = run("from_hf", "--hf_dir", str(tmp_path / "hf"), "--output", str(tmp_path / "back.ckpt"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "num_layers: 4" in res.stdout
    back = ms.load_checkpoint(str(tmp_path / "back.ckpt"))
    for p in net.get_parameters():
        np.testing.assert_array_equal(back[p.name].asnumpy(), p.asnumpy())
    res = run("to_hf", "--config", TINY_YAML, "--checkpoint", str(ckpt), "--output", str(tmp_path / "hf"))
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
        hc.hf_config_to_model_config({"hidden_size": 8})
