"""Facts about the weights of a MiniCPM / LLaMA decoder that several layers need: one table.

* `PROJECTIONS`: the seven linear projections of a decoder layer, with their MindFormers cell
  name, their Hugging Face MiniCPM name and how MindFormers' LLaMA splits them under tensor
  parallelism. Quantization targets, HF conversion and the shard-local quantization analysis all
  read this table.
* `resolve_group_size`: the one rule for quantization groups (groups of g consecutive inputs of
  an output row; -1 means the whole row). Used by QuantConfig and the packed format;
  `parallel.check_tp_divisibility` applies the same rule to every tensor-parallel shard.

This module imports nothing from bitcpm-ms but `errors`, so every layer may use it.
"""
from dataclasses import dataclass
from typing import Dict, Optional

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class Projection:
    name: str          # MindFormers LLaMA cell path inside a decoder layer
    hf_name: str       # Hugging Face MiniCPM / LLaMA module path inside a decoder layer
    tp_split: str      # "column": weight [out, in] split along out; "row": split along in
    in_dim: str        # the model dimension that is this projection's input width
    out_dim: str       # ... and its output width


PROJECTIONS = (
    Projection("attention.wq", "self_attn.q_proj", "column", "hidden", "q"),
    Projection("attention.wk", "self_attn.k_proj", "column", "hidden", "kv"),
    Projection("attention.wv", "self_attn.v_proj", "column", "hidden", "kv"),
    Projection("attention.wo", "self_attn.o_proj", "row", "hidden", "hidden"),
    Projection("feed_forward.w1", "mlp.gate_proj", "column", "hidden", "intermediate"),
    Projection("feed_forward.w2", "mlp.down_proj", "row", "intermediate", "hidden"),
    Projection("feed_forward.w3", "mlp.up_proj", "column", "hidden", "intermediate"),
)
PROJECTION_NAMES = tuple(p.name for p in PROJECTIONS)


def projection_of(layer_name: str) -> Optional[Projection]:
    """The projection a cell path ends with ('model.layers.3.attention.wo' -> wo), or None."""
    for p in PROJECTIONS:
        if layer_name == p.name or layer_name.endswith("." + p.name):
            return p
    return None


def resolve_group_size(in_features: int, group_size: int, what: str = "the layer") -> int:
    """Effective group length for a weight with `in_features` inputs: `in_features` for -1, else
    `group_size`, which must divide it. Raises ConfigError naming `what` and the numbers."""
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) \
            or (group_size != -1 and group_size <= 0):
        raise ConfigError(f"group_size must be -1 (one scale per output row) or a positive int, got {group_size!r}")
    if group_size == -1:
        return int(in_features)
    if in_features % group_size:
        raise ConfigError(f"group_size={group_size} does not divide {what}'s input width {in_features} "
                          f"(not a multiple of group_size); use -1 or a divisor of {in_features}")
    return int(group_size)


def config_get(cfg, name: str, default=None):
    """A model-config field from a dict, a MindFormerConfig or a config object."""
    if isinstance(cfg, dict):
        return cfg.get(name, default)
    return getattr(cfg, name, default)


def ffn_hidden_size(cfg) -> int:
    """SwiGLU width, exactly as MindFormers' LlamaFeedForward derives it."""
    inter = config_get(cfg, "intermediate_size")
    if inter:
        return int(inter)
    hidden = 4 * int(config_get(cfg, "hidden_size"))
    mult = config_get(cfg, "ffn_dim_multiplier")
    if mult is not None:
        hidden = int((mult + 0.01) * hidden)
    hidden = int(2 * hidden / 3)
    multiple_of = int(config_get(cfg, "multiple_of", 256))
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def projection_shapes(model_config) -> Dict[str, tuple]:
    """{projection name: (out, in)} of a LLaMA / BitCPM config (dict or config object)."""
    h, heads = int(config_get(model_config, "hidden_size")), int(config_get(model_config, "num_heads"))
    kv = int(config_get(model_config, "n_kv_heads") or heads)
    dims = {"hidden": h, "q": h, "kv": kv * (h // heads), "intermediate": ffn_hidden_size(model_config)}
    return {p.name: (dims[p.out_dim], dims[p.in_dim]) for p in PROJECTIONS}
