"""GGUF export for llama.cpp: a trained bitcpm-ms checkpoint -> one `.gguf` file, architecture `minicpm`.

    from bitcpm_ms.app.gguf_export import export_gguf
    summary = export_gguf(config, "output/run", "model.gguf", gguf_type="tq2_0", embedding_type="f16")

Written with the `gguf` package (the ggml project's own writer), the way llama.cpp's
`convert_hf_to_gguf.py` writes a MiniCPM model: the MiniCPM scalings (`embedding_scale`,
`residual_scale = scale_depth / sqrt(L)`, `logit_scale = hidden / dim_model_base`), q/k rows
permuted from rotate-half to llama.cpp's pairwise RoPE, the SentencePiece vocabulary with scores,
token types and the BOS / space-prefix flags our tokenizer really uses (`gguf_vocab.py`).

The ternary projections are written from our codes and scales (`quant.quantize_weight`), never
re-derived from floats:
  * f32 / f16: `codes * scale` as floats (exact in f32; f16 rounds only the scale);
  * tq2_0 / tq1_0: llama.cpp's 256-weight ternary blocks (`kernels/gguf_blocks.py`), exact up to the
    fp16 block scale when the group size is -1 or a multiple of 256 and rows are multiples of 256.
    Other group sizes are refused unless `requantize=True`, which keeps the codes, fits one
    least-squares scale per block, and measures what that costs (`gguf_requant.py`).
Embeddings and head go in `embedding_type` (f32, f16, q8_0); norms stay f32. The file is written
under a temporary name and renamed, so an interrupted export leaves nothing half-written.
"""
import contextlib
import os

import numpy as np

from ..errors import ConversionError
from ..fileio import publish_file, tmp_name
from ..kernels.gguf_blocks import block_scales, pack_tq, requantize_block_scales, tq_representable
from ..layout import ffn_hidden_size
from ..quant import QuantConfig, dequantize_weight, quantize_weight, quantized_layer_names
from .gguf_options import TERNARY_TYPES, check_export_args
from .gguf_vocab import sentencepiece_vocab, write_vocab
from ..models.hf_adapter import ms_to_hf_name
from ..models.rope import check_rope_scaling, longrope_mscale
from .quant_section import sync_quant_section
from .artifacts import load_model, resolve

def minicpm_hparams(mc) -> dict:
    """llama.cpp `minicpm` hyper-parameters from a BitCPMConfig (the built model's config)."""
    hidden, layers, heads = int(mc.hidden_size), int(mc.num_layers), int(mc.num_heads)
    if str(getattr(mc, "extend_method", "None")) not in ("None", "none", ""):
        raise ConversionError(f"RoPE extension {mc.extend_method!r} has no GGUF mapping here (LongRoPE goes in "
                              "rope_scaling)")
    context = int(mc.max_position_embedding or mc.seq_length)
    return {"context_length": context, "embedding_length": hidden,
            "block_count": layers, "feed_forward_length": ffn_hidden_size(mc), "head_count": heads,
            "head_count_kv": int(mc.n_kv_heads or heads), "rms_norm_eps": float(mc.rms_norm_eps),
            "rope_freq_base": float(mc.theta), "rope_dimension_count": hidden // heads,
            "vocab_size": int(mc.vocab_size), "embedding_scale": float(mc.scale_emb),
            "residual_scale": float(mc.scale_depth) / layers ** 0.5,
            "logit_scale": hidden / float(mc.dim_model_base),
            "tie_word_embeddings": bool(getattr(mc, "tie_word_embeddings", False)),
            "bos_token_id": mc.bos_token_id, "eos_token_id": mc.eos_token_id,
            "rope_scaling": longrope_for_gguf(getattr(mc, "rope_scaling", None), hidden // heads, context)}


def longrope_for_gguf(rope_scaling, head_dim: int, context_length: int):
    """The LongRoPE factors as llama.cpp's minicpm converter writes them (`rope_factors_long` /
    `rope_factors_short`, scaling type longrope; llama.cpp picks the long ones only past the
    original context), or None. llama.cpp's minicpm graph applies no cos/sin multiplier, so a
    config whose multiplier is not 1 (max_position_embeddings != original) is refused."""
    scaling = check_rope_scaling(rope_scaling, head_dim)
    if scaling is None:
        return None
    mscale = longrope_mscale(context_length, scaling["original_max_position_embeddings"])
    if abs(mscale - 1.0) > 1e-12:
        raise ConversionError(f"LongRoPE with max_position_embeddings {context_length} != original "
                              f"{scaling['original_max_position_embeddings']} scales cos/sin by {mscale:.4f}, "
                              "which llama.cpp's minicpm graph does not do; export refused")
    return scaling


def rope_row_order(out_features: int, n_head: int) -> np.ndarray:
    """Row order that turns HF / MindFormers rotate-half q or k rows into llama.cpp's pairwise
    RoPE layout (convert_hf_to_gguf's LlamaModel.permute): new[r] = old[order[r]]."""
    idx = np.arange(out_features)
    # [n_head, 2 halves, head_dim/2] -> [n_head, head_dim/2, 2]: (x_i, x_{i+d/2}) become neighbours
    return idx.reshape(n_head, 2, out_features // n_head // 2).swapaxes(1, 2).reshape(out_features)


def rope_factor_tensors(hp: dict):
    """(gguf name, float32 [head_dim / 2]) of the LongRoPE factors, as llama.cpp's converter names them."""
    import gguf
    if hp["rope_scaling"] is None:
        return []
    names = gguf.TENSOR_NAMES
    return [(names[gguf.MODEL_TENSOR.ROPE_FACTORS_LONG] + ".weight",
             np.asarray(hp["rope_scaling"]["long_factor"], np.float32)),
            (names[gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT] + ".weight",
             np.asarray(hp["rope_scaling"]["short_factor"], np.float32))]


def _gguf_name(hf_name: str, name_map) -> str:
    out = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if out is None:
        raise ConversionError(f"no GGUF tensor name for {hf_name}")
    return out


def _float_tensor(w: np.ndarray, kind: str):
    """(array, raw_dtype) for add_tensor: f32 / f16 as is, q8_0 through gguf's reference quantizer."""
    import gguf
    if kind == "f32":
        return np.ascontiguousarray(w, np.float32), None
    if kind == "f16":
        return np.ascontiguousarray(w, np.float16), None
    if w.shape[-1] % 32:
        raise ConversionError(f"--embedding_type q8_0 needs rows that are a multiple of 32, got {w.shape[-1]}")
    return gguf.quants.quantize(np.asarray(w, np.float32), gguf.GGMLQuantizationType.Q8_0), \
        gguf.GGMLQuantizationType.Q8_0


def ternary_tensor(codes: np.ndarray, scales: np.ndarray, group_size: int, kind: str, requantize: bool,
                   what: str):
    """(array, raw_dtype, llama.cpp's float32 weight if re-fitted else None, re-fitted?) of one
    ternary projection in GGUF type `kind` (codes [out, in], scales [out, in/g])."""
    import gguf
    if kind in ("f32", "f16"):         # codes * scale: exact in f32; f16 rounds only the scale
        ours = dequantize_weight(codes, scales)
        return np.ascontiguousarray(ours, np.float32 if kind == "f32" else np.float16), None, None, False
    exact = tq_representable(codes.shape[1], group_size)
    if exact or not requantize:
        d = block_scales(scales, codes.shape[1], group_size, what)     # raises for other group sizes
    else:
        d = requantize_block_scales(codes, scales, group_size)
    qtype = gguf.GGMLQuantizationType.TQ2_0 if kind == "tq2_0" else gguf.GGMLQuantizationType.TQ1_0
    blocks = pack_tq(kind, codes, d)
    return blocks, qtype, (None if exact else gguf.quants.dequantize(blocks, qtype)), not exact


def _file_type(gguf_type: str) -> int:
    import gguf
    return {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
            "tq2_0": gguf.LlamaFileType.MOSTLY_TQ2_0, "tq1_0": gguf.LlamaFileType.MOSTLY_TQ1_0}[gguf_type]


def gguf_tensors(params: dict, ternary_layers, quant: QuantConfig, hp: dict, gguf_type: str,
                 embedding_type: str, requantize: bool = False):
    """Yield (our name, gguf name, array, raw_dtype, requantized) for every tensor, in checkpoint
    order. `params`: {MindFormers name: float32 array}. `requantized` is None, or for a ternary
    tensor whose blocks were re-fitted: (our weight, llama.cpp's weight), float32 in our row order."""
    import gguf
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH.MINICPM, hp["block_count"])
    ternary = {f"{layer}.weight" for layer in ternary_layers}
    for name, w in params.items():
        hf_name = ms_to_hf_name(name)
        if hp["tie_word_embeddings"] and hf_name == "lm_head.weight":
            continue                                   # llama.cpp reuses token_embd.weight
        gname = _gguf_name(hf_name, name_map)
        heads = hp["head_count"] if hf_name.endswith("q_proj.weight") else \
            hp["head_count_kv"] if hf_name.endswith("k_proj.weight") else None
        order = rope_row_order(w.shape[0], heads) if heads else None
        if name in ternary:
            if quant.quant_space != "ternary" and gguf_type in TERNARY_TYPES:
                raise ConversionError(f"{gguf_type} holds ternary weights; this model uses the "
                                      f"{quant.quant_space} space (export it with --gguf_type f16 or f32)")
            codes, scales = quantize_weight(w, quant)
            if order is not None:
                codes, scales = codes[order], scales[order]
            arr, raw, seen, requantized = ternary_tensor(codes, scales, quant.group_size, gguf_type,
                                                         requantize, name)
            if requantized:
                ours = dequantize_weight(codes, scales)
                if order is not None:                  # back to our row order
                    inverse = np.argsort(order)
                    ours, seen = ours[inverse], seen[inverse]
                yield name, gname, arr, raw, (ours, seen)
            else:
                yield name, gname, arr, raw, None
            continue
        if order is not None:
            w = w[order]
        if w.ndim == 1:
            yield name, gname, np.ascontiguousarray(w, np.float32), None, None
        else:
            arr, raw = _float_tensor(w, embedding_type)
            yield name, gname, arr, raw, None


def export_gguf(config, checkpoint: str, out_path: str, gguf_type: str = "tq2_0", embedding_type: str = "f16",
                requantize: bool = False, overwrite: bool = False, tokenizer_file: str = None,
                eval_batches: int = 16, log=print) -> dict:
    """Write `config`'s model with the weights of `checkpoint` to `out_path` (.gguf); returns a summary.

    requantize: for TQ2_0/TQ1_0 with a group size they cannot represent, fit one scale per block
    instead of refusing, and report the weight error and the held-out perplexity change
    (`eval_batches` batches of the validation split; 0 skips the perplexity)."""
    import gguf
    check_export_args(out_path, gguf_type, embedding_type, overwrite)
    quant = sync_quant_section(config)
    tokenizer_file = tokenizer_file or resolve(config).need_tokenizer()
    mc = config.model.model_config                      # the vocabulary is checked before the slow part
    vocab = sentencepiece_vocab(tokenizer_file, int(mc.vocab_size), mc.get("bos_token_id"), mc.get("eos_token_id"))
    net, ckpt = load_model(config, checkpoint)          # checks names and shapes against the config
    hp = minicpm_hparams(net.config)
    layers = quantized_layer_names(net) if quant.enabled else []
    if gguf_type in TERNARY_TYPES and not layers:
        raise ConversionError(f"--gguf_type {gguf_type}: the model has no ternary layers (quant.enabled is false)")
    params = {p.name: p.asnumpy().astype(np.float32) for p in net.get_parameters()}

    tmp = tmp_name(out_path)
    writer = gguf.GGUFWriter(tmp, "minicpm")
    replaced, summary = {}, {"tensors": 0, "ternary_tensors": 0, "requantized_tensors": 0, "bytes": {}}
    try:
        writer.add_name(os.path.splitext(os.path.basename(out_path))[0])
        writer.add_file_type(_file_type(gguf_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.add_context_length(hp["context_length"])
        writer.add_embedding_length(hp["embedding_length"])
        writer.add_block_count(hp["block_count"])
        writer.add_feed_forward_length(hp["feed_forward_length"])
        writer.add_head_count(hp["head_count"])
        writer.add_head_count_kv(hp["head_count_kv"])
        writer.add_layer_norm_rms_eps(hp["rms_norm_eps"])
        writer.add_rope_freq_base(hp["rope_freq_base"])
        writer.add_rope_dimension_count(hp["rope_dimension_count"])
        if hp["rope_scaling"] is not None:
            writer.add_rope_scaling_type(gguf.RopeScalingType.LONGROPE)
            writer.add_rope_scaling_orig_ctx_len(hp["rope_scaling"]["original_max_position_embeddings"])
        writer.add_vocab_size(hp["vocab_size"])
        writer.add_embedding_scale(hp["embedding_scale"])
        writer.add_residual_scale(hp["residual_scale"])
        writer.add_logit_scale(hp["logit_scale"])
        if quant.enabled:
            writer.add_int32("bitcpm.quantization.group_size", int(quant.group_size))
            writer.add_string("bitcpm.quantization.space", quant.quant_space)
        write_vocab(writer, vocab)
        ternary = {f"{layer}.weight" for layer in layers}
        for gname, factors in rope_factor_tensors(hp):
            writer.add_tensor(gname, factors)
            summary["tensors"] += 1
        for name, gname, arr, raw, requantized in gguf_tensors(params, layers, quant, hp, gguf_type,
                                                               embedding_type, requantize):
            writer.add_tensor(gname, arr, raw_dtype=raw)
            kind = raw.name.lower() if raw is not None else str(arr.dtype).replace("float", "f")
            summary["bytes"][kind] = summary["bytes"].get(kind, 0) + int(arr.nbytes)
            summary["tensors"] += 1
            summary["ternary_tensors"] += name in ternary
            if requantized is not None:
                replaced[name] = requantized
        summary["requantized_tensors"] = len(replaced)
        if replaced:
            from .gguf_requant import requantization_report
            summary["requantization"] = requantization_report(config, params, layers, quant, replaced,
                                                              eval_batches, log)
        writer.add_bool("bitcpm.requantized", bool(replaced))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        publish_file(tmp, out_path)
    except BaseException:
        with contextlib.suppress(Exception):
            writer.close()
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    summary.update({"path": os.path.abspath(out_path), "checkpoint": os.path.abspath(ckpt), "gguf_type": gguf_type,
                    "embedding_type": embedding_type, "file_bytes": os.path.getsize(out_path),
                    "group_size": quant.group_size if quant.enabled else None, "vocab_padded": vocab.padded,
                    "add_bos": vocab.add_bos, "add_space_prefix": vocab.add_space_prefix})
    return summary
