"""Reference harness: run the REAL Hugging Face MiniCPM4 modeling code (torch).

Why: bitcpm_ms re-implements MiniCPM4 (muP scalings, LongRoPE, GQA, BitCPM ternary
weights, the LlamaTokenizer + chat template) in MindSpore.  This script produces
golden fixtures from the upstream ``modeling_minicpm.py`` / ``configuration_minicpm.py``
so the MindSpore side can be compared against them.  It imports neither bitcpm_ms nor
mindspore and runs ONLY in a scratch interpreter that has torch + transformers 4.46.x
(the upstream code needs 4.46.x), e.g. a venv at /work/refenv:

    python3 -m venv /work/refenv
    /work/refenv/bin/pip install "torch==2.13.0+cpu" transformers==4.46.3 safetensors \
        sentencepiece "protobuf>=5.26" numpy jinja2

Subcommands (``/work/refenv/bin/python -m benchmarks.minicpm_reference CMD -h``):
  make      shrink a real config.json (width/depth shrunk, head_dim and everything else
            kept), build MiniCPMForCausalLM with seeded random weights, optionally
            BitCPM pseudo-quantize the 7 projection kinds, save_pretrained (optionally
            sharded), copy the modeling code + tokenizer files next to it.
  logits    one eager forward (use_cache=False) -> float32 logits [B, T, V];
            ``--decode``: prefill T//2 with a DynamicCache, then one token at a time.
  tokenize  the real slow LlamaTokenizer: ids, ids without specials, decode, chat.

The upstream MiniCPMConfig forces ``_attn_implementation = "flash_attention_2"``;
we always reset it to "eager".  modeling_minicpm.py does ``from .configuration_minicpm
import ...`` (a relative import), so --modeling_dir is mounted as a synthetic package.
"""
import argparse
import hashlib
import importlib
import json
import platform
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "added_tokens.json",
                   "special_tokens_map.json", "tokenizer.json")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def load_modules(modeling_dir):
    """Import the upstream configuration/modeling modules from ``modeling_dir``."""
    pkg_name = "minicpm_upstream_ref"
    if pkg_name not in sys.modules:
        pkg = types.ModuleType(pkg_name)
        pkg.__path__ = [str(Path(modeling_dir).resolve())]
        sys.modules[pkg_name] = pkg
    cfg_mod = importlib.import_module(pkg_name + ".configuration_minicpm")
    mdl_mod = importlib.import_module(pkg_name + ".modeling_minicpm")
    return cfg_mod.MiniCPMConfig, mdl_mod


def versions():
    import safetensors, sentencepiece, transformers  # noqa: E401
    return {"python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "safetensors": safetensors.__version__,
            "sentencepiece": sentencepiece.__version__, "numpy": np.__version__}


def shrink_config(real, args):
    """Shrink width/depth of a real config dict; keep head_dim and all other semantics."""
    head_dim = real["hidden_size"] // real["num_attention_heads"]
    if args.hidden_size % head_dim:
        raise SystemExit(f"--hidden_size must be a multiple of head_dim={head_dim}")
    heads = args.hidden_size // head_dim
    kv = args.num_kv_heads or real.get("num_key_value_heads", real["num_attention_heads"])
    if heads % kv:
        raise SystemExit(f"num_key_value_heads={kv} must divide num_attention_heads={heads}")
    d = dict(real)  # tie_word_embeddings, rope_scaling, scale_* ... untouched
    d.update(hidden_size=args.hidden_size, num_hidden_layers=args.num_layers,
             intermediate_size=args.intermediate_size, num_attention_heads=heads,
             num_key_value_heads=kv, vocab_size=args.vocab_size or real["vocab_size"])
    d["_name_or_path"] = "shrunk-" + str(real.get("_name_or_path", "minicpm"))
    rs = d.get("rope_scaling")
    if rs and rs.get("rope_type") == "longrope":
        for k in ("short_factor", "long_factor"):
            assert len(rs[k]) == head_dim // 2, (k, len(rs[k]), head_dim)
    return d, head_dim


@torch.no_grad()
def init_weights(model, seed):
    """Seeded init chosen so logits and attention are non-degenerate.

    Every nn.Linear: N(0, in_features**-0.5) (fan-in: q.k/sqrt(d) is O(1), so attention is
    far from uniform and RoPE/LongRoPE visibly change outputs).  Embedding: N(0,
    0.5*hidden**-0.5): with tying it is also lm_head and the residual stream still carries
    scale_emb*embedding, so a larger std makes every position predict its own input token
    (std 1.0*: argmax==input 100%; 0.5*: ~83%, logit std ~1).  RMSNorm weights:
    1 + 0.1*N(0,1), so norm weights are actually exercised.  Tied lm_head = embedding.
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # deterministic order; tied params once
        if name.endswith("norm.weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        elif "embed_tokens" in name:
            p.copy_(torch.randn(p.shape, generator=g) * 0.5 * p.shape[1] ** -0.5)
        elif p.dim() == 2:
            p.copy_(torch.randn(p.shape, generator=g) * p.shape[1] ** -0.5)
        else:
            raise RuntimeError(f"unexpected parameter {name} {tuple(p.shape)}")


@torch.no_grad()
def pseudo_quantize(model):
    """BitCPM-CANN published form: per output row s=mean|W|, W <- clamp(round(W/s),-1,1)*s."""
    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in PROJ:
            w = mod.weight.float()
            s = w.abs().mean(dim=1, keepdim=True).clamp_min(1e-8)
            mod.weight.copy_((w / s).round().clamp(-1, 1) * s)
            n += 1
    return n


def cmd_make(a):
    MiniCPMConfig, M = load_modules(a.modeling_dir)
    real = json.loads(Path(a.config).read_text())
    d, head_dim = shrink_config(real, a)
    cfg = MiniCPMConfig(**d)
    cfg._attn_implementation = "eager"
    torch.manual_seed(a.seed)
    model = M.MiniCPMForCausalLM(cfg).eval()
    init_weights(model, a.seed)
    n_pq = pseudo_quantize(model) if a.pseudo_quantized else 0
    model = model.to(DTYPES[a.dtype])
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True, max_shard_size=a.max_shard_size)
    for f in ("configuration_minicpm.py", "modeling_minicpm.py"):
        shutil.copy2(Path(a.modeling_dir) / f, out / f)
    copied = []
    if a.tokenizer_dir:
        for f in TOKENIZER_FILES:
            if (Path(a.tokenizer_dir) / f).exists():
                shutil.copy2(Path(a.tokenizer_dir) / f, out / f)
                copied.append(f)
    written = json.loads((out / "config.json").read_text())
    src = (Path(a.modeling_dir) / "modeling_minicpm.py").read_bytes()
    meta = {"source_config": str(Path(a.config).resolve()), "head_dim": head_dim,
            "hidden_size": a.hidden_size, "num_layers": a.num_layers,
            "intermediate_size": a.intermediate_size, "num_attention_heads": cfg.num_attention_heads,
            "num_key_value_heads": cfg.num_key_value_heads, "vocab_size": cfg.vocab_size,
            "seed": a.seed, "dtype": a.dtype, "pseudo_quantized": a.pseudo_quantized,
            "pseudo_quantized_linears": n_pq, "max_shard_size": a.max_shard_size,
            "tie_word_embeddings_effective": bool(cfg.tie_word_embeddings),
            "tie_word_embeddings_in_source": real.get("tie_word_embeddings", "<absent>"),
            "tie_word_embeddings_written": written.get("tie_word_embeddings", "<absent>"),
            "init": init_weights.__doc__.split("\n\n")[1].strip().replace("\n    ", " "),
            "tokenizer_files": copied, "modeling_minicpm_sha256": hashlib.sha256(src).hexdigest(),
            "versions": versions()}
    (out / "reference_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps({k: meta[k] for k in ("num_attention_heads", "num_key_value_heads",
                      "tie_word_embeddings_written", "pseudo_quantized_linears")}),
          sorted(p.name for p in out.iterdir()))


def load_model(hf_dir, modeling_dir, dtype="float32", no_rope_scaling=False):
    """from_pretrained with eager attention, upcasting stored weights to ``dtype``."""
    MiniCPMConfig, M = load_modules(modeling_dir)
    cfg = MiniCPMConfig.from_pretrained(hf_dir)
    cfg._attn_implementation = "eager"
    if no_rope_scaling:  # diagnostic only: plain RoPE instead of LongRoPE
        cfg.rope_scaling = None
    model = M.MiniCPMForCausalLM.from_pretrained(hf_dir, config=cfg, torch_dtype=DTYPES[dtype])
    return model.eval()


@torch.no_grad()
def cmd_logits(a):
    from transformers.cache_utils import DynamicCache
    model = load_model(a.hf_dir, a.modeling_dir, a.dtype, a.no_rope_scaling)
    ids = torch.from_numpy(np.load(a.ids).astype(np.int64))
    assert ids.dim() == 2, ids.shape
    if not a.decode:
        logits = model(input_ids=ids, use_cache=False).logits
    else:  # prefill T//2 tokens, then feed one token at a time through the real KV cache
        cache, split = DynamicCache(), ids.shape[1] // 2
        out = model(input_ids=ids[:, :split], past_key_values=cache, use_cache=True)
        chunks, cache = [out.logits], out.past_key_values
        for t in range(split, ids.shape[1]):
            out = model(input_ids=ids[:, t:t + 1], past_key_values=cache, use_cache=True)
            chunks.append(out.logits)
            cache = out.past_key_values
        logits = torch.cat(chunks, dim=1)
    np.save(a.out, logits.float().numpy())
    rot = model.model.layers[0].self_attn.rotary_emb
    print(f"logits {tuple(logits.shape)} -> {a.out}; rotary={type(rot).__name__} "
          f"cos_cached={rot.cos_cached.dtype} weights={model.lm_head.weight.dtype}")


def cmd_tokenize(a):
    from transformers import AutoTokenizer, LlamaTokenizer
    d = Path(a.tok_dir)
    if (d / "tokenizer_config.json").exists():
        tok = AutoTokenizer.from_pretrained(d, use_fast=False, trust_remote_code=True)
    else:
        tok = LlamaTokenizer.from_pretrained(d)
    res = []
    for item in json.loads(Path(a.texts).read_text()):
        if isinstance(item, dict) and "chat" in item and tok.chat_template is None:
            r = {"chat": item["chat"], "chat_text": None, "chat_ids": None}  # no template in DIR
        elif isinstance(item, dict) and "chat" in item:
            msgs = item["chat"]
            r = {"chat": msgs,
                 "chat_text": tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                 "chat_ids": tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)}
            r["chat_decoded"] = tok.decode(r["chat_ids"], skip_special_tokens=False)
        else:
            ids = tok(item)["input_ids"]
            r = {"text": item, "ids": ids,
                 "ids_no_special": tok(item, add_special_tokens=False)["input_ids"],
                 "decoded": tok.decode(ids, skip_special_tokens=False)}
        res.append(r)
    out = {"tokenizer_class": type(tok).__name__, "tok_dir": str(d.resolve()),
           "vocab_size": len(tok), "bos_token_id": tok.bos_token_id,
           "eos_token_id": tok.eos_token_id, "versions": versions(), "items": res}
    Path(a.out).write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    print(f"{len(res)} items -> {a.out} ({out['tokenizer_class']}, {len(tok)} tokens)")


def main(argv=None):
    torch.set_num_threads(1)
    import transformers
    transformers.logging.set_verbosity_error()  # hide the upstream GenerationMixin warning
    transformers.logging.disable_progress_bar()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make", help="build + save a shrunk random MiniCPM4")
    m.add_argument("--config", required=True)
    m.add_argument("--modeling_dir", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--hidden_size", type=int, default=128)
    m.add_argument("--num_layers", type=int, default=2)
    m.add_argument("--intermediate_size", type=int, default=256)
    m.add_argument("--vocab_size", type=int, default=None)
    m.add_argument("--num_kv_heads", type=int, default=None)
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--pseudo_quantized", action="store_true")
    m.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    m.add_argument("--max_shard_size", default="5GB")
    m.add_argument("--tokenizer_dir", default=None)
    g = sub.add_parser("logits", help="float32 logits of one forward (or --decode)")
    g.add_argument("--hf_dir", required=True)
    g.add_argument("--modeling_dir", required=True)
    g.add_argument("--ids", required=True, help=".npy int [B, T]")
    g.add_argument("--out", required=True)
    g.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    g.add_argument("--decode", action="store_true")
    g.add_argument("--no_rope_scaling", action="store_true", help="diagnostic: drop LongRoPE")
    t = sub.add_parser("tokenize", help="real slow LlamaTokenizer reference")
    t.add_argument("--tok_dir", required=True)
    t.add_argument("--texts", required=True, help="JSON list of str or {'chat': [...]}")
    t.add_argument("--out", required=True)
    a = p.parse_args(argv)
    {"make": cmd_make, "logits": cmd_logits, "tokenize": cmd_tokenize}[a.cmd](a)


if __name__ == "__main__":
    main()
