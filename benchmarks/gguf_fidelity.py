#!/usr/bin/env python3
"""How faithfully llama.cpp runs our GGUF exports, and what re-quantizing to TQ2_0 costs.

    python3 -m benchmarks.gguf_fidelity --run256 RUN_G256 --run64 RUN_G64 [--train_steps 60]
        [--texts 4] [--ppl_docs 100] [--json benchmarks/results/gguf_fidelity.json]

RUN_G256 / RUN_G64: training output directories of the tiny recipe at group size 256 and 64
(trained here with `--max_steps train_steps` when they hold no checkpoint). For each export
(ours: f32 / f16 / tq2_0 / tq1_0 at g = 256; at g = 64: f32, tq2_0 and tq1_0 with `--requantize`,
and llama.cpp's own `llama-quantize TQ2_0` of the f32 file, default and with f32 embeddings/head):
  * weight error: relative Frobenius error of the ternary tensors llama.cpp reads vs our codes x scales;
  * logits on `--texts` held-out documents vs our MindSpore model: max |diff| / max |logit|, top-1 agreement;
  * token ids: llama.cpp's tokenizer vs ours;
  * perplexity: llama-perplexity on `--ppl_docs` held-out documents vs ours scored the same way
    (chunks of seq_length tokens, second half scored), and the change against our model.
"""
import argparse
import glob
import json
import math
import os
import sys
import tempfile

import numpy as np

from benchmarks import llamacpp
from benchmarks.gguf_reference import OurModel, compare_logits, held_out_texts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_YAML = os.path.join(ROOT, "yaml_configs", "bitcpm_tiny_cpu.yaml")


def _config(g):
    from bitcpm_ms.app.config import load_config
    return load_config(TINY_YAML, {"quant.group_size": g})


def ensure_trained(run_dir: str, g: int, steps: int) -> str:
    if glob.glob(os.path.join(run_dir, "checkpoint", "rank_0", "*.ckpt")):
        return run_dir
    import subprocess
    cmd = [sys.executable, os.path.join(ROOT, "run", "run_bitcpm.py"), "--config", TINY_YAML, "--output_dir", run_dir,
           "--max_steps", str(steps), "--quant.group_size", str(g)]
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT)
    return run_dir


def our_ternary_weights(config, checkpoint) -> dict:
    """{gguf name: float32 weight} of the ternary projections, codes x scales in llama.cpp's row order."""
    from bitcpm_ms.app.artifacts import load_model
    from bitcpm_ms.app.gguf_export import gguf_tensors, minicpm_hparams
    from bitcpm_ms.quant import QuantConfig, quantized_layer_names
    net, _ = load_model(config, checkpoint)
    quant = QuantConfig.from_dict(dict(config.model.model_config.qat_config))
    layers = quantized_layer_names(net)
    params = {p.name: p.asnumpy().astype(np.float32) for p in net.get_parameters()}
    names = {f"{layer}.weight" for layer in layers}
    return {g: a for n, g, a, _, _ in gguf_tensors(params, layers, quant, minicpm_hparams(net.config), "f32", "f32")
            if n in names}


def weight_error(gguf_path: str, ours: dict) -> float:
    import gguf
    r = gguf.GGUFReader(gguf_path)
    num = den = 0.0
    for t in r.tensors:
        if t.name in ours:
            w = gguf.quants.dequantize(t.data, t.tensor_type).reshape(ours[t.name].shape)
            num += float(np.sum((w.astype(np.float64) - ours[t.name]) ** 2))
            den += float(np.sum(ours[t.name].astype(np.float64) ** 2))
    return math.sqrt(num / den)


def measure(name, path, model, ours_w, texts_ids, ppl_file, ppl_ours, extra=None) -> dict:
    logit_rows = [compare_logits(model.logits(ids), llamacpp.logits(path, ids)) for ids in texts_ids]
    ppl = llamacpp.perplexity(path, ppl_file, model.seq_length)
    row = {"variant": name, "file_bytes": os.path.getsize(path), "weight_rel_error": weight_error(path, ours_w),
           "max_rel_logit_diff": max(r["max_rel_diff"] for r in logit_rows),
           "top1_agreement": float(np.average([r["top1_agreement"] for r in logit_rows],
                                              weights=[r["positions"] for r in logit_rows])),
           "top1_flips": sum(r["top1_flips"] for r in logit_rows),
           "flips_are_near_ties": all(r["max_flip_margin"] <= 2 * r["max_abs_diff"] for r in logit_rows),
           "llama_perplexity": ppl, "our_perplexity": ppl_ours, "perplexity_change": ppl / ppl_ours - 1, **(extra or {})}
    print(json.dumps(row), flush=True)
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run256", required=True)
    ap.add_argument("--run64", required=True)
    ap.add_argument("--train_steps", type=int, default=60)
    ap.add_argument("--texts", type=int, default=4)
    ap.add_argument("--ppl_docs", type=int, default=100)
    ap.add_argument("--eval_batches", type=int, default=16)
    ap.add_argument("--json", default=os.path.join(ROOT, "benchmarks", "results", "gguf_fidelity.json"))
    args = ap.parse_args(argv)
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    from bitcpm_ms.app.artifacts import resolve
    from bitcpm_ms.app.gguf_export import export_gguf
    from bitcpm_ms.data.tokenizer import load_sentencepiece
    llamacpp.build()
    work = tempfile.mkdtemp(prefix="gguf_fidelity_")
    art = resolve(_config(64))
    sp = load_sentencepiece(art.need_tokenizer())
    texts = held_out_texts(art.need_dataset(), args.texts)
    ppl_text = "\n\n".join(held_out_texts(art.need_dataset(), args.ppl_docs))
    ppl_file = os.path.join(work, "held_out.txt")
    with open(ppl_file, "w", encoding="utf-8") as f:
        f.write(ppl_text)
    ppl_ids = sp.encode(ppl_text)
    rows, tokenizer_ok = [], True
    from benchmarks.gguf_reference import perplexity_same_way
    for g, run in ((256, ensure_trained(args.run256, 256, args.train_steps)),
                   (64, ensure_trained(args.run64, 64, args.train_steps))):
        model = OurModel(_config(g), run)
        ids = [sp.encode(t)[:model.seq_length] for t in texts]
        ours_w = our_ternary_weights(_config(g), run)
        ppl_ours = perplexity_same_way(model, ppl_ids, model.seq_length)
        variants = ["f32", "f16", "tq2_0", "tq1_0"] if g == 256 else ["f32", "tq2_0", "tq1_0"]
        for kind in variants:
            path = os.path.join(work, f"g{g}-{kind}.gguf")
            s = export_gguf(_config(g), run, path, gguf_type=kind, embedding_type="f32",
                            requantize=(g == 64), eval_batches=args.eval_batches if kind == "tq2_0" else 0)
            if kind == "f32":
                tokenizer_ok &= all(llamacpp.tokenize(path, sp.decode(x)) == x for x in ids)
                tokenizer_ok &= llamacpp.tokenize(path, ppl_text) == ppl_ids
                f32_path = path
            label = f"g={g} ours {kind}" + (" --requantize" if s["requantized_tensors"] else "")
            rows.append(measure(label, path, model, ours_w, ids, ppl_file, ppl_ours,
                                {"group_size": g, "requantization": s.get("requantization")}))
        if g == 64:
            for keep in (None, "f32"):
                path = os.path.join(work, f"g64-llama-quantize-tq2_0-{keep or 'default'}.gguf")
                llamacpp.quantize(f32_path, path, "TQ2_0", keep_embeddings=keep)
                label = "g=64 llama-quantize TQ2_0" + (" (embeddings/head f32)" if keep else
                                                       " (default: embeddings Q4_K, head Q6_K)")
                rows.append(measure(label, path, model, ours_w, ids, ppl_file, ppl_ours, {"group_size": 64}))
    result = {"tokenizer_identical": bool(tokenizer_ok), "texts": args.texts, "ppl_tokens": len(ppl_ids),
              "n_ctx": 256, "train_steps": args.train_steps, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    print(f"tokenizer identical on all texts: {tokenizer_ok}")
    print("| variant | MiB | weight rel. error | max rel. logit diff | top-1 agreement (flips, near-ties?) | "
          "llama-perplexity | ours | change |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['file_bytes'] / 2 ** 20:.2f} | {r['weight_rel_error']:.2e} | "
              f"{r['max_rel_logit_diff']:.2e} | {100 * r['top1_agreement']:.2f}% ({r['top1_flips']}, "
              f"{'yes' if r['flips_are_near_ties'] else 'no'}) | {r['llama_perplexity']:.4f} | "
              f"{r['our_perplexity']:.4f} | {100 * r['perplexity_change']:+.2f}% |")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
