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


# ---------------------------------------------------------------------------- Hugging Face tokenizers
def llamacpp_spm_tokenize(vocab, text, parse_special=False):
    """A Python transcription of llama.cpp's SPM tokenization of `text` with a GGUFVocab
    (src/llama-vocab.cpp: tokenizer_st_partition, then llm_tokenizer_spm_session per text fragment;
    add_space_prefix false): USER_DEFINED tokens (and CONTROL / UNKNOWN ones with parse_special) are
    split out of the text first, longest first; each remaining fragment has its spaces escaped to "▁",
    starts as UTF-8 characters and merges the adjacent pair of best score that is a token, then symbols
    that are not tokens become <0xXX> byte tokens."""
    import heapq
    from bitcpm_ms.app.gguf_vocab import CONTROL, UNKNOWN, USER_DEFINED
    texts = [p.decode("utf-8") for p in vocab.pieces]
    to_id = {t: i for i, t in enumerate(texts)}
    kinds = (USER_DEFINED, CONTROL, UNKNOWN) if parse_special else (USER_DEFINED,)
    special = sorted((i for i, k in enumerate(vocab.types) if k in kinds), key=lambda i: -len(texts[i]))
    frags = [text]
    for i in special:
        out = []
        for f in frags:
            if isinstance(f, int):
                out.append(f)
                continue
            parts = f.split(texts[i])
            for j, part in enumerate(parts):
                if part:
                    out.append(part)
                if j + 1 < len(parts):
                    out.append(i)
        frags = out
    ids = []
    for f in frags:
        if isinstance(f, int):
            ids.append(f)
            continue
        syms = list(f.replace(" ", "\u2581"))
        alive = list(range(len(syms)))
        while True:                               # best score first, then leftmost
            best = []
            for a, b in zip(alive, alive[1:]):
                merged = syms[a] + syms[b]
                if merged in to_id:
                    heapq.heappush(best, (-vocab.scores[to_id[merged]], a, b))
            if not best:
                break
            _, a, b = best[0]
            syms[a] += syms[b]
            alive.remove(b)
        for a in alive:
            if syms[a] in to_id:
                ids.append(to_id[syms[a]])
            else:
                ids += [to_id[f"<0x{byte:02X}>"] for byte in syms[a].encode("utf-8")]
    return ids


@pytest.fixture(scope="module")
def hf_tokenizer_dir(tmp_path_factory):
    from ..data.test_hf_tokenizer import make_hf_tokenizer_dir
    return make_hf_tokenizer_dir(tmp_path_factory.mktemp("hftok") / "tok")


def test_gguf_vocab_of_an_hf_tokenizer(hf_tokenizer_dir):
    """MiniCPM4-shaped directory: pieces, then the 8 chat tokens with their text as CONTROL (score -1000),
    user-defined pieces ("\\n", "...", "<img>") USER_DEFINED, padding to the embedding; BOS added as the
    tokenizer says, no space prefix, EOS </s> and EOT <|im_end|> (the two stops of generation_config),
    the chat template."""
    from bitcpm_ms.app.gguf_vocab import CONTROL, UNUSED, USER_DEFINED, tokenizer_vocab
    from bitcpm_ms.data.hf_tokenizer import load_tokenizer
    from ..data.test_hf_tokenizer import ADDED, CHATML, IM_END, PIECES
    tok = load_tokenizer(hf_tokenizer_dir)
    v = tokenizer_vocab(tok, 512, bos_id=1, eos_id=2)
    assert len(v.pieces) == 512 and v.padded == 512 - 408
    assert [p.decode() for p in v.pieces[PIECES:408]] == ADDED and v.types[PIECES:408] == [CONTROL] * 8
    assert v.scores[PIECES:408] == [-1000.0] * 8 and v.types[408:] == [UNUSED] * 104
    assert [v.pieces[i] for i in (3, 4, 5)] == [b"\n", b"...", b"<img>"] and v.types[3:6] == [USER_DEFINED] * 3
    assert (v.bos_id, v.eos_id, v.eot_id, v.unk_id, v.pad_id) == (1, 2, IM_END, 0, -1)
    assert (v.add_bos, v.add_space_prefix, v.chat_template) == (True, False, CHATML)
    assert tokenizer_vocab(hf_tokenizer_dir, 512).pieces == v.pieces           # a path works too
    with pytest.raises(ConversionError, match=r"has 408 tokens \(400 pieces \+ added tokens\).*400 rows"):
        tokenizer_vocab(tok, 400)
    with pytest.raises(ConversionError, match=r"model config's EOS id is 5, the tokenizer .* stops at \[400, 2\]"):
        tokenizer_vocab(tok, 512, eos_id=5)
    with pytest.raises(ConversionError, match="BOS id is 3"):
        tokenizer_vocab(tok, 512, bos_id=3)


def test_llamacpp_tokenization_of_an_hf_vocab_equals_the_tokenizer(hf_tokenizer_dir):
    """With the types we write, llama.cpp's algorithm (transcribed above) gives the HF tokenizer's ids:
    text with user-defined pieces always, chat tokens when special tokens are parsed (as llama.cpp does
    for prompts). llama.cpp's converter types user-defined pieces NORMAL: then "..." is never built
    (".." is not a piece) and the ids differ, which is why we do not."""
    from bitcpm_ms.app.gguf_vocab import NORMAL, USER_DEFINED, tokenizer_vocab
    from bitcpm_ms.data.hf_tokenizer import HFTokenizer
    tok = HFTokenizer(hf_tokenizer_dir)
    v = tokenizer_vocab(tok, 512)
    rng = np.random.default_rng(0)
    atoms = ["the", " horse", " water", "  ", " ", "\n", "...", ".", "<img>", "12", "中文", "é", "x"]
    texts = ["a...b <img>\n\n the horse."] + ["".join(rng.choice(atoms, 8)) for _ in range(60)]
    for t in texts:
        assert llamacpp_spm_tokenize(v, t) == tok.encode(t, add_special_tokens=False), t
    chat = tok.apply_chat_template([{"role": "user", "content": "Which horse...?"}])
    assert [v.bos_id] + llamacpp_spm_tokenize(v, chat, parse_special=True) == tok.encode(chat)
    v.types = [NORMAL if k == USER_DEFINED else k for k in v.types]
    assert llamacpp_spm_tokenize(v, "a...b") != tok.encode("a...b", add_special_tokens=False)


def test_gguf_export_with_an_hf_tokenizer_directory(exported, hf_tokenizer_dir):
    """processor.tokenizer.vocab_file = an HF tokenizer directory: the GGUF holds its added tokens,
    add_bos_token true, EOS / EOT and the chat template."""
    from ..data.test_hf_tokenizer import CHATML, IM_END
    ds, tmp, models = exported
    path = str(tmp / "hf-tok.gguf")
    export_gguf(_config(ds, **{"quant.group_size": 256, "processor.tokenizer.vocab_file": hf_tokenizer_dir}),
                models[256][0], path, gguf_type="f32", embedding_type="f32")
    fields, _ = _read(path)
    assert fields["tokenizer.ggml.tokens"][IM_END:IM_END + 2] == ["<|im_end|>", "<|im_start|>"]
    assert fields["tokenizer.ggml.token_type"][IM_END] == 3 and fields["tokenizer.ggml.token_type"][3] == 4
    assert (fields["tokenizer.ggml.add_bos_token"], fields["tokenizer.ggml.add_space_prefix"]) == (True, False)
    assert (fields["tokenizer.ggml.eos_token_id"], fields["tokenizer.ggml.eot_token_id"]) == (2, IM_END)
    assert fields["tokenizer.chat_template"] == CHATML


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile("/work/refs/minicpm4_8b/tokenizer.model"), reason="no MiniCPM4 tokenizer")
def test_gguf_vocab_of_the_real_minicpm4_tokenizer():
    """The real tokenizer passes the BPE / identity / whitespace checks; its 1,086 user-defined pieces and
    8 chat tokens are typed as llama.cpp needs them, and llama.cpp's algorithm gives its ids."""
    from collections import Counter
    from bitcpm_ms.app.gguf_vocab import tokenizer_vocab
    from bitcpm_ms.data.hf_tokenizer import HFTokenizer
    tok = HFTokenizer("/work/refs/minicpm4_8b")
    v = tokenizer_vocab(tok, 73448, bos_id=1, eos_id=[2, 73440])
    assert Counter(v.types) == {1: 72095, 4: 1086, 6: 256, 3: 10, 2: 1} and v.padded == 0
    assert (v.bos_id, v.eos_id, v.eot_id, v.add_bos, v.add_space_prefix) == (1, 2, 73440, True, False)
    texts = ["a...b <img> 1+1=2\n\n\tx", "你好，世界！今天天气很好。", "MiniCPM4 在 2025 年发布  (two  spaces)"]
    for t in texts:
        assert llamacpp_spm_tokenize(v, t) == tok.encode(t, add_special_tokens=False), t
