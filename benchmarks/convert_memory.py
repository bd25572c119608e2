"""Peak memory of `convert_hf.py from_hf` on a ~1B-shaped model (target: <= 1.5x the larger of input and output).

A random MiniCPM model with the 1B YAML's dimensions (hidden 1536, 24 layers, 12 heads, 2 KV heads,
SwiGLU 5632, vocabulary 73448, untied: 0.98B parameters) is written as HF safetensors shards, then
converted in a fresh process whose peak resident set (ru_maxrss of the child) is recorded:
  * pseudo_quantized_bf16: ternary x per-row scale in bf16 (the BitCPM-CANN release format;
    detection reads every projection once more before converting);
  * float32: a full-precision checkpoint.
The output is the float32 .ckpt, so for bf16 input it is twice the input.

    python3 -m benchmarks.convert_memory [--variants pseudo_quantized_bf16,float32] [--layers 24]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.machine import target, write_results

SHAPE = dict(hidden_size=1536, num_hidden_layers=24, num_attention_heads=12, num_key_value_heads=2,
             intermediate_size=5632, vocab_size=73448)


def write_model(out: str, layers: int, pseudo: bool, dtype: str, shards: int = 4) -> int:
    """Write the random model shard by shard (never whole in memory); returns its bytes on disk."""
    from tests.app.hf_fixtures import random_hf_weights, save_safetensors
    cfg = dict(SHAPE, num_hidden_layers=layers, architectures=["MiniCPMForCausalLM"], bos_token_id=1,
               eos_token_id=[2, 73440], max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=10000.0,
               scale_emb=12, scale_depth=1.4, dim_model_base=256, tie_word_embeddings=False)
    os.makedirs(out, exist_ok=True)
    weight_map, one_layer = {}, dict(cfg, num_hidden_layers=1)
    per = -(-layers // shards)
    for k in range(shards):
        tensors = {}
        for i in range(k * per, min(layers, (k + 1) * per)):
            layer = random_hf_weights(one_layer, seed=i, pseudo_quantized=pseudo, tied=True)
            tensors.update({n.replace("layers.0.", f"layers.{i}."): v for n, v in layer.items() if ".layers.0." in n})
        if k == shards - 1:
            glob = random_hf_weights(dict(one_layer, num_hidden_layers=0), seed=99, tied=False)
            tensors.update(glob)
        name = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_safetensors(os.path.join(out, name), tensors, dtype)
        weight_map.update({n: name for n in tensors})
        del tensors
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f)
    return sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out) if f.endswith(".safetensors"))


# the child's own high-water mark (VmHWM is per address space; ru_maxrss would carry over the
# parent's peak across fork + exec)
_PRINT_HWM = ("print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')))")


def measure(hf_dir: str, out_dir: str) -> dict:
    code = ("from bitcpm_ms.app.hf_import import from_hf; "
            f"s = from_hf({hf_dir!r}, {out_dir!r}); " + _PRINT_HWM)
    t = time.time()
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    peak = int(res.stdout.strip().splitlines()[-1]) * 1024
    baseline = subprocess.run([sys.executable, "-c", "import bitcpm_ms.app.hf_import; "
                               "import mindspore.train.checkpoint_pb2; " + _PRINT_HWM],
                              capture_output=True, text=True, cwd=ROOT)
    return {"peak_rss_bytes": peak, "import_only_rss_bytes": int(baseline.stdout.strip().splitlines()[-1]) * 1024,
            "seconds": round(time.time() - t, 1),
            "output_bytes": os.path.getsize(os.path.join(out_dir, "model.ckpt"))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="pseudo_quantized_bf16,float32")
    p.add_argument("--layers", type=int, default=SHAPE["num_hidden_layers"])
    p.add_argument("--tokenizer", default=None, help="a tokenizer.model to ship (default: train a tiny one)")
    p.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "convert_memory.json"))
    args = p.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as work:
        tok = args.tokenizer
        if tok is None:
            from bitcpm_ms.data.tokenizer import train_tokenizer
            tok = os.path.join(work, "tokenizer.model")
            train_tokenizer([f"document {i} with some words and numbers {i * 7}" for i in range(2000)], tok,
                            vocab_size=300)
        for variant in args.variants.split(","):
            hf_dir, out_dir = os.path.join(work, variant), os.path.join(work, variant + "-out")
            pseudo = variant.startswith("pseudo")
            in_bytes = write_model(hf_dir, args.layers, pseudo, "BF16" if variant.endswith("bf16") else "F32")
            shutil.copyfile(tok, os.path.join(hf_dir, "tokenizer.model"))
            row = measure(hf_dir, out_dir)
            row.update(input_bytes=in_bytes, larger_bytes=max(in_bytes, row["output_bytes"]))
            row["peak_over_larger"] = row["peak_rss_bytes"] / row["larger_bytes"]
            row["target_met"] = row["peak_over_larger"] <= 1.5
            rows[variant] = row
            shutil.rmtree(hf_dir)
            shutil.rmtree(out_dir)
    print(f"{'variant':<24} {'input GB':>9} {'output GB':>10} {'peak RSS GB':>12} {'peak/larger':>12} {'target 1.5x':>12}")
    for name, r in rows.items():
        print(f"{name:<24} {r['input_bytes'] / 1e9:>9.2f} {r['output_bytes'] / 1e9:>10.2f} "
              f"{r['peak_rss_bytes'] / 1e9:>12.2f} {r['peak_over_larger']:>12.2f} {'met' if r['target_met'] else 'MISSED':>12}")
    doc = {"shape": dict(SHAPE, num_hidden_layers=args.layers), "variants": rows}
    write_results(dict(doc, targets=targets(doc)), args.json)


def targets(doc) -> list:
    """Peak RSS <= 1.5x the larger of input and output, per variant (one measurement: peak RSS of a
    deterministic conversion varies little; no interval)."""
    return [target(f"HF import peak memory / larger of input and output, {name}", r["peak_over_larger"],
                   [r["peak_over_larger"]] * 2, 1.5, higher_is_better=False, unit="x",
                   method="one run, peak RSS; no interval") for name, r in doc["variants"].items()]


if __name__ == "__main__":
    main()
