"""A plain numpy MiniCPM4 forward (float64), written from the real modeling code's math.

It is the yardstick every forward path of ours is tested against (MindSpore graph in full
precision and fake-quant, fused CPU ops, KV-cache prefill and decode, packed kernels), and is
itself checked against Hugging Face's `modeling_minicpm.py` in `benchmarks/minicpm_fidelity.py`.
It reads Hugging Face tensor names and a Hugging Face config dict, so it needs nothing of ours but
the RoPE tables (models/rope.py):

    h = embed[ids] * scale_emb
    per layer:  h += attn(rms(h)) * scale_depth / sqrt(L);  h += mlp(rms(h)) * scale_depth / sqrt(L)
    attn: rotate-half RoPE (LongRoPE tables) on q, k; GQA; causal softmax(q k^T / sqrt(d)) v; o_proj
    mlp:  down(silu(gate(x)) * up(x))
    logits = lm_head(rms(h) / (hidden / dim_model_base))     lm_head = embed when tied
"""
import math
from typing import Dict, Optional

import numpy as np

from .rope import rope_tables

# MiniCPMConfig's defaults for keys a real config.json may leave out (configuration_minicpm.py)
HF_DEFAULTS = {"rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": True, "scale_emb": 1,
               "dim_model_base": 1, "scale_depth": 1, "rope_scaling": None, "max_position_embeddings": 2048}


def hf_value(hf_config: dict, key: str):
    """config.json's value, or MiniCPMConfig's default when the key is absent (or null)."""
    value = hf_config.get(key)
    return HF_DEFAULTS.get(key) if value is None else value


def _rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def minicpm_logits(hf_config: dict, weights: Dict[str, np.ndarray], ids, positions: Optional[np.ndarray] = None
                   ) -> np.ndarray:
    """Logits [T, vocab] (float64) of one sequence `ids` [T] under HF names and config semantics."""
    w = {k: np.asarray(v, np.float64) for k, v in weights.items()}
    ids = np.asarray(ids, np.int64)
    n_layers, hidden = int(hf_config["num_hidden_layers"]), int(hf_config["hidden_size"])
    heads = int(hf_config["num_attention_heads"])
    kv_heads = int(hf_config.get("num_key_value_heads") or heads)
    d, eps = hidden // heads, float(hf_value(hf_config, "rms_norm_eps"))
    t = len(ids)
    positions = np.arange(t) if positions is None else np.asarray(positions)
    max_pos = int(hf_value(hf_config, "max_position_embeddings"))
    cos, sin = rope_tables(d, max(max_pos, int(positions.max()) + 1), float(hf_value(hf_config, "rope_theta")),
                           hf_value(hf_config, "rope_scaling"), max_pos)
    cos, sin = cos[positions].astype(np.float64), sin[positions].astype(np.float64)     # [T, d]
    res = float(hf_value(hf_config, "scale_depth")) / math.sqrt(n_layers)
    h = w["model.embed_tokens.weight"][ids] * float(hf_value(hf_config, "scale_emb"))    # [T, hidden]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for i in range(n_layers):
        p = f"model.layers.{i}."
        x = _rms(h, w[p + "input_layernorm.weight"], eps)
        q = (x @ w[p + "self_attn.q_proj.weight"].T).reshape(t, heads, d).transpose(1, 0, 2)      # [H, T, d]
        k = (x @ w[p + "self_attn.k_proj.weight"].T).reshape(t, kv_heads, d).transpose(1, 0, 2)   # [KVH, T, d]
        v = (x @ w[p + "self_attn.v_proj.weight"].T).reshape(t, kv_heads, d).transpose(1, 0, 2)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = np.repeat(k, heads // kv_heads, axis=0), np.repeat(v, heads // kv_heads, axis=0)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d) + mask                                      # [H, T, T]
        s = np.exp(s - s.max(-1, keepdims=True))
        ctx = (s / s.sum(-1, keepdims=True)) @ v                                                # [H, T, d]
        h = h + (ctx.transpose(1, 0, 2).reshape(t, hidden) @ w[p + "self_attn.o_proj.weight"].T) * res
        x = _rms(h, w[p + "post_attention_layernorm.weight"], eps)
        g = x @ w[p + "mlp.gate_proj.weight"].T
        h = h + (((g / (1 + np.exp(-g))) * (x @ w[p + "mlp.up_proj.weight"].T)) @ w[p + "mlp.down_proj.weight"].T) * res
    h = _rms(h, w["model.norm.weight"], eps) / (hidden / float(hf_value(hf_config, "dim_model_base")))
    head = w.get("lm_head.weight")
    if head is None:
        if not hf_value(hf_config, "tie_word_embeddings"):
            raise KeyError("lm_head.weight is missing and the config is not tied")
        head = w["model.embed_tokens.weight"]
    return h @ head.T
