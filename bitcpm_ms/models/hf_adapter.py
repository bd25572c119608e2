"""Hugging Face MiniCPM <-> BitCPMForCausalLM: parameter names and config keys, with HF semantics.

Kept beside the model (as torchtitan keeps its state-dict adapter): the app's converters read and
write files, this module says what the names and values mean.

Semantics that matter for real checkpoints (MiniCPM4, BitCPM-CANN):
  * a key absent from config.json means MiniCPMConfig's default, not ours: `tie_word_embeddings`
    defaults to True there (MiniCPM4-0.5B has no such key and ships no lm_head.weight), `rope_theta`
    to 10000, `rms_norm_eps` to 1e-6 (`reference.HF_DEFAULTS`);
  * `eos_token_id` may be a list ([2, 73440]: `</s>` and `<|im_end|>`); the model config keeps the
    whole list, MindFormers reads only its first entry;
  * `rope_scaling` (LongRoPE) is carried over and checked (models/rope.py);
  * `pad_token_id` is NOT carried over: MindFormers' LLaMA hides every key position whose token
    equals pad_token_id (and drops it from the loss), while HF's model masks nothing without an
    explicit attention mask. MiniCPM4-8B's pad id is 2 = `</s>`, which real text holds between
    documents, so imports get NO_PAD_ID (-1, a token that never occurs): the MindFormers forward
    then equals HF's on every input.
"""
import re
from typing import Optional

from ..errors import ConversionError
from ..layout import PROJECTIONS
from .reference import HF_DEFAULTS, hf_value
from .rope import RopeScalingError, check_rope_scaling

# (HF name, bitcpm-ms / MindFormers name) inside decoder layer i ("model.layers.<i>.<name>")
_LAYER_MAP = [(f"{p.hf_name}.weight", f"{p.name}.weight") for p in PROJECTIONS] + [
    ("input_layernorm.weight", "attention_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
]
_GLOBAL_MAP = [
    ("model.embed_tokens.weight", "model.tok_embeddings.embedding_weight"),
    ("model.norm.weight", "model.norm_out.weight"),
    ("lm_head.weight", "lm_head.weight"),
]
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")

# HF config.json key -> BitCPMConfig key
CONFIG_MAP = {
    "hidden_size": "hidden_size", "num_hidden_layers": "num_layers", "num_attention_heads": "num_heads",
    "num_key_value_heads": "n_kv_heads", "intermediate_size": "intermediate_size", "vocab_size": "vocab_size",
    "rms_norm_eps": "rms_norm_eps", "scale_emb": "scale_emb", "scale_depth": "scale_depth",
    "dim_model_base": "dim_model_base", "tie_word_embeddings": "tie_word_embeddings",
    "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id",
    "rope_theta": "theta", "max_position_embeddings": "max_position_embedding", "rope_scaling": "rope_scaling",
}
# keys whose absence means MiniCPMConfig's default (filled on import so the semantics survive)
NO_PAD_ID = -1
_DEFAULTED = ("tie_word_embeddings", "rope_theta", "rms_norm_eps", "scale_emb", "scale_depth", "dim_model_base")


def _rename(name: str, src: int):
    """Map a parameter name through the tables; src 0: HF -> ours, 1: ours -> HF. None if unknown."""
    dst = 1 - src
    for pair in _GLOBAL_MAP:
        if name == pair[src]:
            return pair[dst]
    m = _LAYER.match(name)            # both sides name layers "model.layers.<i>.<rest>"
    if m:
        for pair in _LAYER_MAP:
            if m.group(2) == pair[src]:
                return f"model.layers.{m.group(1)}.{pair[dst]}"
    return None


def hf_to_ms_name(name: str) -> str:
    out = _rename(name, 0)
    if out is None:
        raise ConversionError(f"unknown Hugging Face parameter {name!r} (not a MiniCPM/LLaMA weight)")
    return out


def ms_to_hf_name(name: str) -> str:
    out = _rename(name, 1)
    if out is None:
        raise ConversionError(f"parameter {name!r} has no Hugging Face MiniCPM name")
    return out


def imported_name(name: str, tied: bool = False) -> Optional[str]:
    """Our name for an HF tensor, or None for one an import drops: rotary `inv_freq` buffers (the
    tables are recomputed) and, in a tied model, `lm_head.weight` (the embedding serves as head).
    An unknown name is a ConversionError."""
    if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
        return None
    return hf_to_ms_name(name)


def eos_ids(value) -> tuple:
    """An eos_token_id (int, list or None) as a tuple of ints."""
    if value is None:
        return ()
    return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))


def hf_config_to_model_config(hf: dict) -> dict:
    """HF MiniCPM config.json -> keys of BitCPMConfig (model.model_config in our YAML), with
    MiniCPMConfig's defaults written out for the keys config.json leaves to them."""
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in hf]
    if missing:
        raise ConversionError(f"config.json lacks {missing}: not a MiniCPM/LLaMA config")
    out = {ours: hf[theirs] for theirs, ours in CONFIG_MAP.items() if hf.get(theirs) is not None}
    for key in _DEFAULTED:
        out[CONFIG_MAP[key]] = hf_value(hf, key)
    out["tie_word_embeddings"] = bool(out["tie_word_embeddings"])
    head_dim = int(hf["hidden_size"]) // int(hf["num_attention_heads"])
    try:
        out["rope_scaling"] = check_rope_scaling(hf.get("rope_scaling"), head_dim)
    except RopeScalingError as err:
        raise ConversionError(f"config.json: {err}") from None
    if out["rope_scaling"] is None:
        out.pop("rope_scaling")
    out["pad_token_id"] = NO_PAD_ID
    eos = eos_ids(hf.get("eos_token_id"))
    if len(eos) > 1:
        out["eos_token_id"] = list(eos)
    return out


def model_config_to_hf_config(mc: dict, quant_dict: Optional[dict] = None, flavour: str = "latent") -> dict:
    """config.json of a MiniCPM model. Every key llama.cpp's converter and HF's MiniCPM loader read is
    written explicitly (a missing context length or rope theta makes llama.cpp refuse the file, a
    missing tie_word_embeddings means *tied* to MiniCPMConfig)."""
    hf = {theirs: mc[ours] for theirs, ours in CONFIG_MAP.items() if mc.get(ours) is not None}
    hf.setdefault("num_key_value_heads", mc.get("num_heads"))
    hf.setdefault("max_position_embeddings", mc.get("seq_length"))
    hf.setdefault("rope_theta", HF_DEFAULTS["rope_theta"])
    hf["tie_word_embeddings"] = bool(mc.get("tie_word_embeddings") or False)
    hf.setdefault("rope_scaling", None)
    if mc.get("pad_token_id") is not None and int(mc["pad_token_id"]) >= 0:
        hf["pad_token_id"] = int(mc["pad_token_id"])
    if isinstance(hf.get("eos_token_id"), tuple):
        hf["eos_token_id"] = list(hf["eos_token_id"])
    hf.update({"architectures": ["MiniCPMForCausalLM"], "model_type": "minicpm", "hidden_act": "silu",
               "torch_dtype": "float32", "attention_bias": False, "use_cache": True})
    if quant_dict:
        hf["bitcpm_quantization"] = {**quant_dict, "format": flavour}
    return hf
