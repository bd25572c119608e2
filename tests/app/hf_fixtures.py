"""Random Hugging Face MiniCPM directories, written with numpy only (no torch), for import tests.

`REAL_05B` / `REAL_8B` are facts read from the real MiniCPM4 config.json files (OpenBMB); the test
models keep their semantics (LongRoPE factors, head_dim, tying, eps, eos list) and shrink width,
depth and vocabulary.
"""
import json
import os
from typing import Dict, Optional

import numpy as np

from bitcpm_ms.app.hf_weights import f32_to_bf16
from bitcpm_ms.layout import PROJECTIONS

# MiniCPM4-0.5B: 32 LongRoPE factors (head_dim 64); MiniCPM4-8B: 64 (head_dim 128)
LONGROPE_05B = [1.0004360675811768, 1.0668443441390991, 1.1631425619125366, 1.3025742769241333,
                1.5040205717086792, 1.7941505908966064, 2.2101221084594727, 2.802666664123535,
                3.6389970779418945, 4.804192543029785, 6.39855432510376, 8.527148246765137,
                11.277542114257812, 14.684998512268066, 18.69317054748535, 23.13019371032715,
                27.72362518310547, 32.1606559753418, 36.168827056884766, 39.57627868652344,
                42.32667541503906, 44.45526885986328, 46.04962921142578, 47.21482849121094,
                48.05115509033203, 48.64370346069336, 49.05967712402344, 49.34980392456055,
                49.551246643066406, 49.69068145751953, 49.78697967529297, 49.85338592529297]
REAL_05B = {"architectures": ["MiniCPMForCausalLM"], "bos_token_id": 1, "eos_token_id": [2, 73440],
            "hidden_act": "silu", "hidden_size": 1024, "initializer_range": 0.1, "intermediate_size": 4096,
            "max_position_embeddings": 32768, "num_attention_heads": 16, "num_hidden_layers": 24,
            "num_key_value_heads": 2, "rms_norm_eps": 1e-05,
            "rope_scaling": {"rope_type": "longrope", "long_factor": LONGROPE_05B, "short_factor": LONGROPE_05B,
                             "original_max_position_embeddings": 32768},
            "torch_dtype": "bfloat16", "transformers_version": "4.46.3", "use_cache": True, "vocab_size": 73448,
            "scale_emb": 12, "dim_model_base": 256, "scale_depth": 1.4}
LONGROPE_8B = [0.9977997200264581, 1.014658295992452, 1.0349680404997148, 1.059429246056193,
                1.0888815016813513, 1.1243301355211495, 1.166977103606075, 1.2182568066927284,
                1.2798772354275727, 1.3538666751582975, 1.4426259039919596, 1.5489853358570191,
                1.6762658237220625, 1.8283407612492941, 2.0096956085876183, 2.225478927469756,
                2.481536379650452, 2.784415934557119, 3.1413289096347365, 3.560047844772632,
                4.048719380066383, 4.615569542115128, 5.2684819496549835, 6.014438591970396,
                6.858830049237097, 7.804668263503327, 8.851768731513417, 9.99600492938444,
                11.228766118181639, 12.536757560834843, 13.902257701387796, 15.303885189125953,
                16.717837610115794, 18.119465097853947, 19.484965238406907, 20.792956681060105,
                22.02571786985731, 23.16995406772833, 24.217054535738416, 25.16289275000465,
                26.007284207271347, 26.753240849586767, 27.40615325712662, 27.973003419175363,
                28.461674954469114, 28.880393889607006, 29.237306864684626, 29.540186419591297,
                29.79624387177199, 30.01202719065413, 30.193382037992453, 30.34545697551969,
                30.47273746338473, 30.579096895249787, 30.66785612408345, 30.741845563814174,
                30.80346599254902, 30.85474569563567, 30.897392663720595, 30.932841297560394,
                30.962293553185553, 30.986754758742034, 31.007064503249293, 31.02392307921529]
REAL_8B = {"architectures": ["MiniCPMForCausalLM"], "bos_token_id": 1, "eos_token_id": [2, 73440], "pad_token_id": 2,
           "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.1, "intermediate_size": 16384,
           "max_position_embeddings": 32768, "model_type": "minicpm", "num_attention_heads": 32,
           "num_hidden_layers": 32, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
           "rope_scaling": {"rope_type": "longrope", "long_factor": LONGROPE_8B, "short_factor": LONGROPE_8B,
                            "original_max_position_embeddings": 32768},
           "torch_dtype": "bfloat16", "transformers_version": "4.46.3", "use_cache": True, "vocab_size": 73448,
           "rope_theta": 10000.0, "scale_emb": 12, "scale_depth": 1.4, "mup_denominator": 32, "dim_model_base": 256,
           "tie_word_embeddings": False}


def shrunk_config(real: dict, hidden: int = 128, layers: int = 2, intermediate: int = 256, vocab: int = 384,
                  kv_heads: Optional[int] = None) -> dict:
    """The real config with width, depth and vocabulary shrunk and head_dim kept."""
    head_dim = real["hidden_size"] // real["num_attention_heads"]
    cfg = json.loads(json.dumps(real))
    cfg.update(hidden_size=hidden, num_hidden_layers=layers, intermediate_size=intermediate, vocab_size=vocab,
               num_attention_heads=hidden // head_dim)
    cfg["num_key_value_heads"] = kv_heads or min(real["num_key_value_heads"], hidden // head_dim)
    return cfg


def random_hf_weights(cfg: dict, seed: int = 0, pseudo_quantized: bool = False, group_size: int = -1,
                      tied: Optional[bool] = None) -> Dict[str, np.ndarray]:
    """HF-named float32 tensors; ternary projections (codes x scale per group) when pseudo_quantized."""
    from bitcpm_ms.quant import QuantConfig, fake_quant_weight
    rng = np.random.default_rng(seed)
    h, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    d = h // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * d
    shapes = {"self_attn.q_proj": (h, h), "self_attn.k_proj": (kv, h), "self_attn.v_proj": (kv, h),
              "self_attn.o_proj": (h, h), "mlp.gate_proj": (f, h), "mlp.up_proj": (f, h), "mlp.down_proj": (h, f)}
    out = {"model.embed_tokens.weight": rng.normal(0, 0.05, (v, h)).astype(np.float32)}
    for i in range(cfg["num_hidden_layers"]):
        for p in PROJECTIONS:
            w = rng.normal(0, 0.05, shapes[p.hf_name]).astype(np.float32)
            if pseudo_quantized:
                w = fake_quant_weight(w, QuantConfig(group_size=group_size))
            out[f"model.layers.{i}.{p.hf_name}.weight"] = w
        for norm in ("input_layernorm", "post_attention_layernorm"):
            out[f"model.layers.{i}.{norm}.weight"] = (1 + rng.normal(0, 0.1, h)).astype(np.float32)
    out["model.norm.weight"] = (1 + rng.normal(0, 0.1, h)).astype(np.float32)
    tied = cfg.get("tie_word_embeddings", True) if tied is None else tied
    if not tied:
        out["lm_head.weight"] = rng.normal(0, 0.05, (v, h)).astype(np.float32)
    return out


def save_safetensors(path: str, tensors: Dict[str, np.ndarray], dtype: str = "F32") -> None:
    """A safetensors file in F32 or BF16 (numpy has no bfloat16: the bits are written directly)."""
    header, blobs, offset = {}, [], 0
    for name, value in tensors.items():
        raw = (f32_to_bf16(value) if dtype == "BF16" else np.ascontiguousarray(value, np.float32)).tobytes()
        header[name] = {"dtype": dtype, "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(len(head).to_bytes(8, "little") + head)
        for raw in blobs:
            f.write(raw)


def write_hf_model(out_dir: str, cfg: dict, tensors: Dict[str, np.ndarray], dtype: str = "F32", shards: int = 1,
                   tokenizer_dir: Optional[str] = None) -> str:
    """config.json + model.safetensors (or `shards` files and model.safetensors.index.json)."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    names = list(tensors)
    if shards == 1:
        save_safetensors(os.path.join(out_dir, "model.safetensors"), tensors, dtype)
    else:
        weight_map = {}
        for k, part in enumerate(np.array_split(np.arange(len(names)), shards)):
            fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
            save_safetensors(os.path.join(out_dir, fname), {names[i]: tensors[names[i]] for i in part}, dtype)
            weight_map.update({names[i]: fname for i in part})
        with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    if tokenizer_dir:
        import shutil
        for fname in os.listdir(tokenizer_dir):
            shutil.copyfile(os.path.join(tokenizer_dir, fname), os.path.join(out_dir, fname))
    return out_dir
