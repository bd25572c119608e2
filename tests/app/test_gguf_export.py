"""GGUF export read back with the ggml project's own reader (gguf.GGUFReader + gguf.quants.dequantize):
ternary tensors equal our codes times scales (exactly in f32; with the fp16 block scale in TQ2_0 /
TQ1_0), q/k rows in llama.cpp's RoPE order, metadata keys, the tokenizer's pieces, scores and
types, and the named errors."""
import os

import mindspore as ms
import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from bitcpm_ms.app.artifacts import build_model  # noqa: E402
from bitcpm_ms.app.cli import export_main  # noqa: E402
from bitcpm_ms.app.config import load_config  # noqa: E402
from bitcpm_ms.app.gguf_export import export_gguf, rope_row_order  # noqa: E402
from bitcpm_ms.data.tokenizer import load_sentencepiece  # noqa: E402
from bitcpm_ms.errors import ConversionError  # noqa: E402
from bitcpm_ms.quant import QuantConfig, quantize_weight  # noqa: E402

from ..helpers import TINY_YAML  # noqa: E402

LAYERS, HIDDEN, HEADS, KV, FFN = 2, 256, 4, 2, 512


def _config(dataset_dir, **extra):
    ov = {"model.model_config.hidden_size": HIDDEN, "model.model_config.num_layers": LAYERS,
          "model.model_config.num_heads": HEADS, "model.model_config.n_kv_heads": KV,
          "model.model_config.intermediate_size": FFN, "model.model_config.seq_length": 32,
          "model.model_config.vocab_size": 512, "model.model_config.dim_model_base": 64,
          "train_dataset.data_loader.dataset_dir": os.path.join(dataset_dir, "train"),
          "eval_dataset.data_loader.dataset_dir": os.path.join(dataset_dir, "validation"),
          "eval_dataset.batch_size": 2, "data.output_dir": str(dataset_dir),
          "processor.tokenizer.vocab_file": os.path.join(dataset_dir, "tokenizer.model")}
    ov.update(extra)
    return load_config(TINY_YAML, ov)


@pytest.fixture(scope="module")
def exported(small_dataset, tmp_path_factory):
    """A random 2-layer model at g = 256 (TQ-exact) and g = 64, its checkpoints and weights."""
    ds = str(small_dataset[0])
    tmp = tmp_path_factory.mktemp("gguf")
    out = {}
    for g in (256, 64):
        net = build_model(_config(ds, **{"quant.group_size": g}))
        ckpt = str(tmp / f"g{g}.ckpt")
        ms.save_checkpoint(net, ckpt)
        out[g] = (ckpt, {p.name: p.asnumpy() for p in net.get_parameters()})
    return ds, tmp, out


def _read(path):
    r = gguf.GGUFReader(path)
    fields = {k: f.contents() for k, f in r.fields.items()}
    tensors = {t.name: t for t in r.tensors}
    return fields, tensors


def _weight(t):
    """float32 [rows, cols] as llama.cpp computes with it (numpy order: [out, in])."""
    return gguf.quants.dequantize(t.data, t.tensor_type).reshape(int(t.shape[1]), int(t.shape[0])).astype(np.float32)


def _ours(w, g, heads=None):
    codes, scales = quantize_weight(w, QuantConfig(group_size=g))
    gsz = w.shape[1] if g == -1 else g
    out = codes.astype(np.float32) * np.repeat(scales, gsz, axis=1)
    return out[rope_row_order(w.shape[0], heads)] if heads else out, codes, scales


@pytest.mark.parametrize("gguf_type,embedding_type", [("f32", "f16"), ("f16", "q8_0"), ("tq2_0", "f16"),
                                                       ("tq1_0", "f32")])
def test_gguf_ternary_tensors_and_metadata(exported, gguf_type, embedding_type):
    ds, tmp, models = exported
    ckpt, params = models[256]
    path = str(tmp / f"m-{gguf_type}.gguf")
    s = export_gguf(_config(ds, **{"quant.group_size": 256}), ckpt, path, gguf_type=gguf_type,
                    embedding_type=embedding_type)
    assert s["ternary_tensors"] == 7 * LAYERS and s["requantized_tensors"] == 0
    assert not [f for f in os.listdir(tmp) if ".tmp-" in f]
    fields, tensors = _read(path)
    assert fields["general.architecture"] == "minicpm"
    expect = {"minicpm.context_length": 32, "minicpm.embedding_length": HIDDEN, "minicpm.block_count": LAYERS,
              "minicpm.feed_forward_length": FFN, "minicpm.attention.head_count": HEADS,
              "minicpm.attention.head_count_kv": KV, "minicpm.rope.freq_base": 10000.0,
              "minicpm.embedding_scale": 12.0, "minicpm.logit_scale": HIDDEN / 64,
              "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
              "tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_space_prefix": False,
              "bitcpm.quantization.group_size": 256}
    for k, v in expect.items():
        assert fields[k] == pytest.approx(v), k
    assert fields["minicpm.residual_scale"] == pytest.approx(1.4 / LAYERS ** 0.5)
    assert fields["minicpm.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
    assert len(tensors) == 3 + 9 * LAYERS        # embd, output_norm, output + 9 per layer
    QT = gguf.GGMLQuantizationType
    qtype = {"f32": QT.F32, "f16": QT.F16, "tq2_0": QT.TQ2_0, "tq1_0": QT.TQ1_0}[gguf_type]
    for i in range(LAYERS):
        for gname, ours_name, heads in (("attn_q", "attention.wq", HEADS), ("attn_k", "attention.wk", KV),
                                        ("attn_v", "attention.wv", None), ("ffn_down", "feed_forward.w2", None)):
            t = tensors[f"blk.{i}.{gname}.weight"]
            assert t.tensor_type == qtype
            want, _, _ = _ours(params[f"model.layers.{i}.{ours_name}.weight"], 256, heads)
            if gguf_type != "f32":         # f16, or one fp16 scale per 256-block: exactly codes * fp16(scale)
                want = np.sign(want) * np.abs(want).astype(np.float16).astype(np.float32)
            np.testing.assert_array_equal(_weight(t), want)
        np.testing.assert_array_equal(tensors[f"blk.{i}.attn_norm.weight"].data,
                                      params[f"model.layers.{i}.attention_norm.weight"])
    for gname, ours_name in (("token_embd", "model.tok_embeddings.embedding_weight"), ("output", "lm_head.weight")):
        t, w = tensors[f"{gname}.weight"], params[ours_name]
        assert t.tensor_type == {"f32": QT.F32, "f16": QT.F16, "q8_0": QT.Q8_0}[embedding_type]
        want = gguf.quants.dequantize(gguf.quants.quantize(w, QT.Q8_0), QT.Q8_0) if embedding_type == "q8_0" \
            else w.astype(embedding_type.replace("f", "float"))
        np.testing.assert_array_equal(_weight(t), want)


def test_gguf_tokenizer_pieces_round_trip(exported):
    ds, tmp, models = exported
    path = str(tmp / "tok.gguf")
    export_gguf(_config(ds, **{"quant.group_size": 256}), models[256][0], path, gguf_type="f32", embedding_type="f32")
    fields, _ = _read(path)
    sp = load_sentencepiece(os.path.join(ds, "tokenizer.model"))
    n = sp.get_piece_size()
    tokens = fields["tokenizer.ggml.tokens"]
    assert len(tokens) == 512                 # padded to the model's embedding rows
    assert tokens[:n] == [sp.id_to_piece(i) for i in range(n)]
    assert tokens[n:] == [f"[PAD{i}]" for i in range(1, 513 - n)]
    np.testing.assert_array_equal(np.asarray(fields["tokenizer.ggml.scores"][:n], np.float32),
                                  np.asarray([sp.get_score(i) for i in range(n)], np.float32))
    types = fields["tokenizer.ggml.token_type"]
    assert types[0] == 3 and types[1] == 3 and types[2] == 3 and types[3] == 2     # pad/bos/eos control, unk
    assert types[4] == 6 and sp.id_to_piece(4) == "<0x00>"                         # byte fallback pieces
    assert all(t == 5 for t in types[n:])


def test_gguf_requantize_reports_its_cost(exported):
    ds, tmp, models = exported
    ckpt, params = models[64]
    cfg = lambda: _config(ds, **{"quant.group_size": 64})
    with pytest.raises(ConversionError, match="group size 64.*--requantize"):
        export_gguf(cfg(), ckpt, str(tmp / "r.gguf"))
    assert not os.path.exists(tmp / "r.gguf") and not [f for f in os.listdir(tmp) if ".tmp-" in f]
    logs = []
    s = export_gguf(cfg(), ckpt, str(tmp / "r.gguf"), requantize=True, eval_batches=1, log=logs.append)
    assert s["requantized_tensors"] == 7 * LAYERS
    rep = s["requantization"]
    assert 0 < rep["weight_error"]["relative_frobenius_error"] < 0.5
    h = rep["held_out"]
    assert h["ours"]["tokens"] == h["requantized"]["tokens"] > 0
    assert np.isfinite(h["perplexity_change"]) and h["requantized"]["perplexity"] != h["ours"]["perplexity"]
    assert any("relative weight error" in m for m in logs)
    _, tensors = _read(str(tmp / "r.gguf"))
    w = params["model.layers.0.feed_forward.w1.weight"]
    codes, _ = quantize_weight(w, QuantConfig(group_size=64))
    # codes kept: llama.cpp's weight has our signs and zeros
    np.testing.assert_array_equal(np.sign(_weight(tensors["blk.0.ffn_gate.weight"])), codes)


def test_gguf_named_errors(exported, tmp_path, capsys):
    ds, tmp, models = exported
    ckpt = models[256][0]
    cfg = lambda **kw: _config(ds, **{"quant.group_size": 256, **kw})
    with pytest.raises(ConversionError, match="unknown --gguf_type"):
        export_gguf(cfg(), ckpt, str(tmp_path / "a.gguf"), gguf_type="q4_k")
    (tmp_path / "exists.gguf").write_bytes(b"old")
    with pytest.raises(ConversionError, match="exists.*--overwrite"):
        export_gguf(cfg(), ckpt, str(tmp_path / "exists.gguf"))
    export_gguf(cfg(), ckpt, str(tmp_path / "exists.gguf"), overwrite=True)
    assert gguf.GGUFReader(str(tmp_path / "exists.gguf")).fields["general.architecture"]
    with pytest.raises(ConversionError, match=r"vocabulary mismatch.*has \d+ pieces.*300 rows"):
        export_gguf(cfg(**{"model.model_config.vocab_size": 300}), ckpt, str(tmp_path / "v.gguf"))
    # the command line refuses bad flags before importing anything heavy: error line, exit 2
    base = ["--config", TINY_YAML, "--checkpoint", ckpt, "--format", "gguf"]
    assert export_main(base + ["--output", str(tmp_path / "b.gguf"), "--gguf_type", "q2_k"]) == 2
    assert "unknown --gguf_type 'q2_k'" in capsys.readouterr().err
    assert export_main(base + ["--output", str(tmp_path / "exists.gguf")]) == 2
    assert "exists (pass --overwrite" in capsys.readouterr().err
    assert export_main(base + ["--output_dir", str(tmp_path / "d")]) == 2
    assert "--output FILE.gguf" in capsys.readouterr().err
