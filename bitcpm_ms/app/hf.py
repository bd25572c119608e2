"""Hugging Face <-> bitcpm-ms checkpoints for MiniCPM-architecture models.

HF MiniCPM (`modeling_minicpm.py`) and MindFormers' LLaMA use the same weight layouts (rotate-half
RoPE, [out, in] linears), so conversion is a name map plus dtype. Two export flavours, as the
published BitCPM models use:
  * "latent": the full-precision latent weights (like the `-unquantized` repositories), for
    continued QAT;
  * "pseudo_quantized": each quantized projection replaced by levels x scale (fake-quant), a
    normal float model any MiniCPM loader runs.
Weights are read and written as safetensors (numpy; no torch needed). A `pytorch_model.bin`
is read only when torch is installed.
"""
import json
import os
import shutil
from typing import Dict

import numpy as np

from ..errors import ConversionError
from ..fileio import atomic_dir
from ..layout import ffn_hidden_size
from ..models.hf_adapter import CONFIG_MAP, hf_config_to_model_config, hf_to_ms_name, ms_to_hf_name  # noqa: F401
from ..models.hf_adapter import model_config_to_hf_config as adapter_hf_config
from ..quant import QuantConfig, fake_quant_weight
from ..quant.api import default_filter
from .hf_weights import HFWeights

def resolved_model_config(model_config) -> dict:
    """The BitCPMConfig keys of CONFIG_MAP with the values the built model uses (a built model's
    `net.config`, so MindFormers' defaults such as theta = 10000 and max_position_embedding =
    seq_length are filled in), plus the SwiGLU width MindFormers derives when it is not set."""
    get = (lambda k: model_config.get(k)) if isinstance(model_config, dict) else \
        (lambda k: getattr(model_config, k, None))
    mc = {ours: get(ours) for ours in CONFIG_MAP.values()}
    mc["num_heads"], mc["seq_length"], mc["pad_token_id"] = get("num_heads"), get("seq_length"), get("pad_token_id")
    mc["intermediate_size"] = ffn_hidden_size(model_config)
    return mc


def model_config_to_hf_config(mc: dict, quant: QuantConfig = None, flavour: str = "latent") -> dict:
    """config.json of a MiniCPM model (`models.hf_adapter`), with our quantizer recorded."""
    return adapter_hf_config(mc, quant.to_dict() if quant is not None and quant.enabled else None, flavour)


def read_hf_weights(model_dir: str) -> Dict[str, np.ndarray]:
    """All tensors of a HF model directory as float32 (small models; `from_hf` streams instead)."""
    weights = HFWeights(model_dir)
    return {name: weights.get(name) for name in weights.names()}


def hf_to_ms_params(tensors: Dict[str, np.ndarray], dtype=np.float32) -> Dict[str, np.ndarray]:
    """Rename HF tensors to bitcpm-ms names; rotary inv_freq buffers are dropped (recomputed)."""
    out = {}
    for name, value in tensors.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        out[hf_to_ms_name(name)] = np.asarray(value, dtype=dtype)
    return out


def ms_to_hf_params(params: Dict[str, np.ndarray], quant: QuantConfig = None, flavour: str = "latent",
                    dtype=np.float32) -> Dict[str, np.ndarray]:
    """bitcpm-ms parameters -> HF tensors; "pseudo_quantized" fake-quantizes the QAT projections."""
    if flavour not in ("latent", "pseudo_quantized"):
        raise ConversionError(f"unknown export flavour {flavour!r}: use latent or pseudo_quantized")
    select = default_filter(quant) if quant is not None and quant.enabled else None
    out = {}
    for name, value in params.items():
        value = np.asarray(value, dtype=np.float32)
        if flavour == "pseudo_quantized" and select is not None and name.endswith(".weight") \
                and select(name[:-len(".weight")], None):
            value = fake_quant_weight(value, quant)
        out[ms_to_hf_name(name)] = value.astype(dtype)
    return out


def tokenizer_config(tokenizer_file: str, hf_config: dict) -> dict:
    """tokenizer_config.json for our SentencePiece model as a LlamaTokenizer: no BOS/EOS added
    (our data has none at document starts) and a prefix space only if the model adds one."""
    from .gguf_vocab import sentencepiece_vocab
    vocab = sentencepiece_vocab(tokenizer_file, int(hf_config["vocab_size"]), hf_config.get("bos_token_id"),
                                hf_config.get("eos_token_id"))
    n = len(vocab.pieces) - vocab.padded
    special = {i: vocab.pieces[i].decode("utf-8") for i in (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id)
               if 0 <= i < n}
    named = {"pad_token": vocab.pad_id, "bos_token": vocab.bos_id, "eos_token": vocab.eos_id, "unk_token": vocab.unk_id}
    return {"tokenizer_class": "LlamaTokenizer", "add_bos_token": vocab.add_bos, "add_eos_token": False,
            "add_prefix_space": vocab.add_space_prefix, "legacy": True, "clean_up_tokenization_spaces": False,
            "split_special_tokens": True,          # a literal "</s>" in text is text, as in our data
            "model_max_length": int(hf_config.get("max_position_embeddings") or 0) or None, "sp_model_kwargs": {},
            **{k: special[i] for k, i in named.items() if i in special},
            "added_tokens_decoder": {str(i): {"content": t, "special": True, "normalized": False, "lstrip": False,
                                              "rstrip": False, "single_word": False} for i, t in sorted(special.items())}}


def write_hf_dir(out_dir: str, tensors: Dict[str, np.ndarray], hf_config: dict, tokenizer_file: str = None):
    """config.json, generation_config.json, model.safetensors (+ tokenizer.model, tokenizer_config.json,
    special_tokens_map.json), written to a temp dir then renamed."""
    from safetensors.numpy import save_file
    tok_cfg = tokenizer_config(tokenizer_file, hf_config) if tokenizer_file else None    # checked first
    gen_cfg = {k: hf_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in hf_config}
    with atomic_dir(out_dir, error=ConversionError) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(tmp, "model.safetensors"))
        files = {"config.json": hf_config, "generation_config.json": gen_cfg}
        if tok_cfg:
            shutil.copyfile(tokenizer_file, os.path.join(tmp, "tokenizer.model"))
            files["tokenizer_config.json"] = tok_cfg
            files["special_tokens_map.json"] = {k: v for k, v in tok_cfg.items() if k.endswith("_token")
                                                and isinstance(v, str)}
        for name, obj in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(obj, f, indent=2)


def to_hf(config, checkpoint: str, output: str, tokenizer_file: str = None, flavour: str = "pseudo_quantized",
          dtype: str = "float32") -> int:
    """A bitcpm-ms checkpoint of `config`'s model -> HF directory; returns the tensor count."""
    from .artifacts import load_model
    from .config import sync_quant_section
    quant = sync_quant_section(config)
    net, _ = load_model(config, checkpoint)            # checks names and shapes against the config
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    tensors = ms_to_hf_params(params, quant, flavour, dtype=np.dtype(dtype))
    hf_config = model_config_to_hf_config(resolved_model_config(net.config), quant, flavour)
    hf_config["torch_dtype"] = dtype
    write_hf_dir(output, tensors, hf_config, tokenizer_file)
    return len(tensors)
