"""Fidelity to the real MiniCPM4 / BitCPM-CANN models: our import against Hugging Face's modeling code.

The reference side is `benchmarks/minicpm_reference.py`, run under a scratch interpreter with torch
and transformers 4.46.3 (never a dependency of ours). It builds random models from the REAL
MiniCPM4 config.json files (width and depth shrunk, head_dim, LongRoPE factors, tying, eps kept),
saves them with `save_pretrained` (f32, sharded f32, pseudo-quantized bf16) and dumps the real
code's logits over 320 positions (one forward, and a KV-cache decode after a 160-token prefill).

This script imports each model with `from_hf` and compares, per model:
  * graph: our MindSpore forward (fused CPU ops and the op chain; fake-quant for pseudo-quantized);
  * numpy: our numpy reference (models/reference.py);
  * decode: prefill 160 + one-token steps, teacher-forced (fake-quant; and packed for ternary);
  * gguf: (with --gguf) f32 GGUF of the import run by llama.cpp; TQ2_0 for the ternary model.
Metric: max |ours - theirs| / max |theirs| over all positions, and top-1 agreement.

    python3 -m benchmarks.minicpm_fidelity --refs /work/refs/models [--gguf] [--json results/minicpm_fidelity.json]
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from benchmarks.machine import write_results

PREFILL = 160


def compare(ours: np.ndarray, theirs: np.ndarray) -> dict:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return {"max_rel": float(np.abs(ours - theirs).max() / np.abs(theirs).max()),
            "top1": float(np.mean(ours.argmax(-1) == theirs.argmax(-1))), "positions": int(theirs.shape[0])}


def graph_logits(config_path: str, ids: np.ndarray, fused: bool) -> np.ndarray:
    import mindspore as ms
    from bitcpm_ms.app.artifacts import load_model
    from bitcpm_ms.app.config import load_config
    config = load_config(config_path, {"model.model_config.cpu_fused_ops": fused})
    net, _ = load_model(config, config.init_from_checkpoint)
    net.set_train(False)
    return net(ms.Tensor(ids[None].astype(np.int32)))[0].asnumpy().reshape(len(ids), -1)


def decode_logits(lm, ids: np.ndarray) -> np.ndarray:
    """Teacher-forced KV-cache logits for positions PREFILL-1 .. len(ids)-1: [n, V]."""
    n = len(ids)
    cache = lm.new_cache(1, n)
    logits, keys, values = lm.prefill(ids[None, :PREFILL].astype(np.int32), np.array([PREFILL], np.int32))
    cache.write_prompt(keys, values)
    out = [logits[0]]
    for pos in range(PREFILL, n):
        logits, keys, values = lm.step(ids[None, pos:pos + 1].astype(np.int32), np.array([pos], np.int32), cache)
        cache.write_step(keys, values, np.array([pos], np.int32))
        out.append(logits[0])
    return np.stack(out[:-1])


def decoders(config_path: str, ternary: bool):
    from bitcpm_ms.app.artifacts import load_model
    from bitcpm_ms.app.config import load_config
    from bitcpm_ms.inference import CachedLM
    config = load_config(config_path)
    net, _ = load_model(config, config.init_from_checkpoint)
    seq = int(config.model.model_config.seq_length)
    yield "decode_fake_quant" if ternary else "decode", CachedLM(net, context=seq)
    if ternary:
        from bitcpm_ms.quant.convert import convert_model
        convert_model(net)
        yield "decode_packed", CachedLM(net, context=seq, decode_steps=1)


def gguf_rows(config_path: str, ids: np.ndarray, theirs: np.ndarray, ternary: bool, tmp: str) -> dict:
    from benchmarks import llamacpp
    from bitcpm_ms.app.config import load_config
    from bitcpm_ms.app.gguf_export import export_gguf
    rows = {}
    config = load_config(config_path)
    mc = config.model.model_config
    tq_rows = int(mc.hidden_size) % 256 == 0 and int(mc.intermediate_size) % 256 == 0
    if ternary and not tq_rows:
        rows["gguf_tq2_0_llamacpp"] = {"skipped": "TQ2_0 blocks need rows of 256 weights; this model has "
                                                  f"hidden {mc.hidden_size}, intermediate {mc.intermediate_size}"}
    for kind in (["f32", "tq2_0"] if ternary and tq_rows else ["f32"]):
        path = os.path.join(tmp, f"model-{kind}.gguf")
        config = load_config(config_path)
        export_gguf(config, config.init_from_checkpoint, path, gguf_type=kind, embedding_type="f32", log=lambda *a: None)
        rows[f"gguf_{kind}_llamacpp"] = compare(llamacpp.logits(path, [int(i) for i in ids]), theirs)
    return rows


# plain, Chinese, mixed and chat text (the reference tokenizer gives the expected ids)
TEXTS = [
    "Hello world! The quick brown fox jumps over the lazy dog.",
    "你好，世界！今天天气很好。",
    "<|im_start|>user\nhi<|im_end|>",
    "MiniCPM4 在 2025 年发布，有 0.5B 和 8B 两个版本  (two  spaces)\tand a tab; 价格 3.14 元。",
    "  leading spaces, trailing spaces   \n\nnew paragraphs... and an ellipsis...",
    "三元量化（ternary quantization）把权重限制为 {-1, 0, 1} 乘以一个分组缩放因子。",
    "def f(x):\n    return x ** 2  # 平方\n",
    "Emoji 🙂 and rare characters: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, ½, ©, naïve café, Ångström.",
    "URL https://example.org/a?b=c&d=e, e-mail someone@example.com, 1,234,567.89",
    "</s> and <s> written as text, <unk> too, <|im_end|> in the middle",
    {"chat": [{"role": "system", "content": "You are a helpful assistant."},
              {"role": "user", "content": "用一句话介绍 BitCPM。"}]},
    {"chat": [{"role": "user", "content": "What is 1.58-bit quantization?"},
              {"role": "assistant", "content": "Weights in {-1, 0, 1} times a scale."},
              {"role": "user", "content": "为什么它能省内存？"}]},
]


def reference_tokenization(tok_dir: str, ref_python: str, work: str):
    """The real slow LlamaTokenizer's ids for TEXTS (minicpm_reference.py tokenize, scratch interpreter)."""
    import subprocess
    texts, out = os.path.join(work, "texts.json"), os.path.join(work, "tokenize_ref.json")
    with open(texts, "w") as f:
        json.dump(TEXTS, f, ensure_ascii=False)
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "minicpm_reference.py")
    res = subprocess.run([ref_python, script, "tokenize", "--tok_dir", tok_dir, "--texts", texts, "--out", out],
                         capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"reference tokenizer failed: {res.stderr[-2000:]}")
    with open(out) as f:
        return json.load(f)["items"]


def tokenization_rows(tok_dir: str, gguf_path, ref_python: str, work: str) -> dict:
    """Our HFTokenizer and (with a GGUF of the real vocabulary) llama.cpp against the real tokenizer:
    plain text with BOS as configured, and rendered chats with their control tokens."""
    from bitcpm_ms.data.hf_tokenizer import HFTokenizer
    ours = HFTokenizer(tok_dir)
    rows = {"ours": {"agree": 0, "total": 0, "mismatches": []}}
    if gguf_path:
        from benchmarks import llamacpp
        rows["llamacpp"] = {"agree": 0, "total": 0, "mismatches": []}
    for item in reference_tokenization(tok_dir, ref_python, work):
        if "chat" in item:
            text, want = item["chat_text"], [ours.bos_id] + item["chat_ids"]   # llama.cpp adds BOS as configured
            checks = {"ours": ([ours.bos_id] + ours.encode(text, add_special_tokens=False))
                      if ours.apply_chat_template(item["chat"]) == text else ["chat template differs"]}
            if gguf_path:
                checks["llamacpp"] = llamacpp.tokenize(gguf_path, text, parse_special=True)
        else:
            text, want = item["text"], item["ids"]
            checks = {"ours": ours.encode(text)}
            if gguf_path:
                # transformers parses special-token strings in any text: llama.cpp's parse_special does that
                checks["llamacpp"] = llamacpp.tokenize(gguf_path, text, parse_special=True)
        for who, got in checks.items():
            rows[who]["total"] += 1
            if got == want:
                rows[who]["agree"] += 1
            else:
                rows[who]["mismatches"].append({"text": text, "want": want, "got": got})
    return rows


def run_model(ref_dir: str, work: str, with_gguf: bool) -> dict:
    from bitcpm_ms.app.hf_import import from_hf
    from bitcpm_ms.app.hf_weights import HFWeights
    from bitcpm_ms.models.reference import minicpm_logits
    ids = np.load(os.path.join(ref_dir, "ref_ids.npy"))[0]
    theirs = np.load(os.path.join(ref_dir, "ref_logits.npy"))[0]
    theirs_decode = np.load(os.path.join(ref_dir, "ref_decode_logits.npy"))[0]
    out_dir = os.path.join(work, os.path.basename(ref_dir))
    summary = from_hf(ref_dir, out_dir, seq_length=len(ids))
    config_path = os.path.join(out_dir, "config.yaml")
    ternary = summary["pseudo_quantized"]
    with open(os.path.join(ref_dir, "config.json")) as f:
        hf_config = json.load(f)
    weights = HFWeights(ref_dir)
    row = {"import": {k: summary[k] for k in ("tied", "pseudo_quantized", "group_size", "dtypes", "rope_scaling")},
           "decode_vs_forward_in_reference": compare(theirs_decode[PREFILL - 1:-1], theirs[PREFILL - 1:-1])}
    row["numpy_reference"] = compare(minicpm_logits(hf_config, {n: weights.get(n) for n in weights.names()}, ids),
                                     theirs)
    for fused in (True, False):
        row["graph_fused_cpu_ops" if fused else "graph_op_chain"] = compare(graph_logits(config_path, ids, fused),
                                                                             theirs)
    for name, lm in decoders(config_path, ternary):
        row[name] = compare(decode_logits(lm, ids), theirs_decode[PREFILL - 1:-1])
    if with_gguf:
        row.update(gguf_rows(config_path, ids, theirs, ternary, out_dir))
    return row, out_dir


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--refs", default=os.environ.get("BITCPM_MS_MINICPM_REFS", "/work/refs/models"),
                   help="directories made by minicpm_reference.py make/logits (each with ref_logits.npy)")
    p.add_argument("--gguf", action="store_true", help="also run the GGUF exports in llama.cpp (builds it once)")
    p.add_argument("--ref_python", default="/work/refenv/bin/python",
                   help="interpreter with transformers 4.46.3 for the tokenization check (skipped when missing)")
    p.add_argument("--json", default=os.path.join(os.path.dirname(__file__), "results", "minicpm_fidelity.json"))
    args = p.parse_args(argv)
    models = sorted(d for d in os.listdir(args.refs) if os.path.isfile(os.path.join(args.refs, d, "ref_logits.npy")))
    if not models:
        raise SystemExit(f"no reference models in {args.refs}: make them with benchmarks/minicpm_reference.py")
    results, tokenization = {}, None
    with tempfile.TemporaryDirectory() as work:
        for name in models:
            t = time.time()
            results[name], out_dir = run_model(os.path.join(args.refs, name), work, args.gguf)
            results[name]["seconds"] = round(time.time() - t, 1)
            with open(os.path.join(args.refs, name, "reference_meta.json")) as f:
                results[name]["reference"] = {k: v for k, v in json.load(f).items() if k != "init"}
            tok_dir = os.path.join(out_dir, "tokenizer")
            if tokenization is None and os.path.isfile(args.ref_python) and \
                    os.path.isfile(os.path.join(tok_dir, "tokenizer_config.json")):
                gguf_path = os.path.join(out_dir, "model-f32.gguf") if args.gguf else None
                tokenization = tokenization_rows(tok_dir, gguf_path, args.ref_python, work)
    print(f"{'model':<18} {'path':<30} {'max rel':>10} {'top-1':>7}")
    for name, row in results.items():
        for path, r in row.items():
            if isinstance(r, dict) and "max_rel" in r:
                print(f"{name:<18} {path:<30} {r['max_rel']:>10.2e} {r['top1']:>7.1%}")
            elif isinstance(r, dict) and "skipped" in r:
                print(f"{name:<18} {path:<30} skipped: {r['skipped']}")
    for who, r in (tokenization or {}).items():
        print(f"tokenization {who:<9} {r['agree']}/{r['total']} texts give the real tokenizer's ids")
    write_results({"models": results, "tokenization": tokenization, "threshold_max_rel": 1e-4}, args.json)


if __name__ == "__main__":
    main()
