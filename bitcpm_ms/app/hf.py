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
from typing import Dict

import numpy as np

from ..errors import ConversionError
from ..fileio import atomic_dir
from ..layout import ffn_hidden_size
from ..models.hf_adapter import CONFIG_MAP, eos_ids, imported_name, ms_to_hf_name
from ..models.hf_adapter import model_config_to_hf_config as adapter_hf_config
from ..quant import QuantConfig, fake_quant_weight
from ..quant.api import default_filter
from .hf_weights import HFWeights
from .quant_section import sync_quant_section
from ..data.hf_tokenizer import load_tokenizer
from ..data.hf_tokenizer_files import write_tokenizer_files
from .artifacts import load_model


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
        ours = imported_name(name)
        if ours is not None:
            out[ours] = np.asarray(value, dtype=dtype)
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


def write_hf_dir(out_dir: str, tensors: Dict[str, np.ndarray], hf_config: dict, tokenizer_path: str = None):
    """config.json, generation_config.json, model.safetensors and the tokenizer's files (a tokenizer.model
    of ours, or an HF tokenizer directory with its added tokens and chat template), written to a temp
    dir then renamed. The eos list of the tokenizer (MiniCPM4: [2, 73440]) goes into both configs."""
    from safetensors.numpy import save_file
    tok = load_tokenizer(tokenizer_path) if tokenizer_path else None           # checked first
    if tok is not None:
        n_tok, rows = int(getattr(tok, "vocab_size")), int(hf_config["vocab_size"])
        if n_tok > rows:
            raise ConversionError(f"vocabulary mismatch: the tokenizer {tokenizer_path} has {n_tok} tokens but the "
                                  f"model's embedding has {rows} rows")
        eos = sorted(set(eos_ids(hf_config.get("eos_token_id"))) | set(tok.eos_token_ids))
        hf_config = dict(hf_config, eos_token_id=eos[0] if len(eos) == 1 else eos)
    gen_cfg = {k: hf_config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in hf_config}
    with atomic_dir(out_dir, error=ConversionError) as tmp:
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, os.path.join(tmp, "model.safetensors"))
        if tok is not None:
            write_tokenizer_files(tok, tmp)
        for name, obj in (("config.json", hf_config), ("generation_config.json", gen_cfg)):
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(obj, f, indent=2)


def to_hf(config, checkpoint: str, output: str, tokenizer_file: str = None, flavour: str = "pseudo_quantized",
          dtype: str = "float32") -> int:
    """A bitcpm-ms checkpoint of `config`'s model -> HF directory; returns the tensor count."""
    quant = sync_quant_section(config)
    net, _ = load_model(config, checkpoint)            # checks names and shapes against the config
    params = {p.name: p.asnumpy() for p in net.get_parameters()}
    tensors = ms_to_hf_params(params, quant, flavour, dtype=np.dtype(dtype))
    hf_config = model_config_to_hf_config(resolved_model_config(net.config), quant, flavour)
    hf_config["torch_dtype"] = dtype
    write_hf_dir(output, tensors, hf_config, tokenizer_file)
    return len(tensors)
