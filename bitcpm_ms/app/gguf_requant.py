"""What re-quantizing to TQ2_0 / TQ1_0 costs, measured at export time (`--requantize`).

TQ2_0 and TQ1_0 keep one fp16 scale per 256 weights. A model trained with smaller groups (the
tiny recipe's g = 64) has up to four different scales per block, so the export has to fit one
(`kernels/gguf_blocks.requantize_block_scales`: codes kept, least-squares scale per block). This
module reports the weight error of that fit over every re-fitted tensor, and the held-out
perplexity of the model with our weights against the model with the weights llama.cpp will
compute with: both run through the same full-precision network (quantizers off, weights set to
the dequantized values), on the first `eval_batches` batches of the validation split.
"""
import copy

import numpy as np
from mindformers.tools.register import MindFormerConfig
import mindspore as ms

from ..quant import QuantConfig, fake_quant_weight
from ..training.evaluation import evaluate_on_prepared
from .artifacts import build_model, resolve


def weight_error(replaced: dict) -> dict:
    """{name: (ours, requantized)} -> relative Frobenius error overall and per tensor (worst)."""
    num = den = 0.0
    worst = (0.0, None)
    for name, (ours, seen) in replaced.items():
        d2 = float(np.sum((seen.astype(np.float64) - ours) ** 2))
        w2 = float(np.sum(ours.astype(np.float64) ** 2))
        num, den = num + d2, den + w2
        rel = (d2 / w2) ** 0.5 if w2 else 0.0
        if rel > worst[0]:
            worst = (rel, name)
    return {"relative_frobenius_error": (num / den) ** 0.5 if den else 0.0,
            "worst_tensor_relative_error": worst[0], "worst_tensor": worst[1], "tensors": len(replaced)}


def _float_network(config):
    """The configured model with its quantizers off (plain Linear layers, same parameter names)."""
    cfg = copy.deepcopy(config)
    qat = dict(cfg.model.model_config.get("qat_config") or {})
    qat["enabled"] = False
    cfg.model.model_config.qat_config = MindFormerConfig(**qat)
    return build_model(cfg)


def held_out_perplexity_change(config, params: dict, ternary_layers, quant: QuantConfig, replaced: dict,
                               eval_batches: int) -> dict:
    """Perplexity with our dequantized weights vs with the re-fitted ones, same batches."""
    dataset = resolve(config).need_dataset()
    batch = int((config.get("eval_dataset") or {}).get("batch_size") or config.runner_config.batch_size)
    net = _float_network(config)
    ternary = {f"{layer}.weight" for layer in ternary_layers}
    ours = {name: (fake_quant_weight(w, quant) if name in ternary else w) for name, w in params.items()}
    results = {}
    for label, override in (("ours", {}), ("requantized", {k: v[1] for k, v in replaced.items()})):
        for p in net.get_parameters():
            p.set_data(ms.Tensor(override.get(p.name, ours[p.name]).astype(np.float32)))
        m = evaluate_on_prepared(net, dataset, batch_size=batch, max_batches=eval_batches)
        results[label] = {"loss": m["loss"], "perplexity": m["perplexity"], "tokens": m["tokens"]}
    change = results["requantized"]["perplexity"] / results["ours"]["perplexity"] - 1.0
    return {"ours": results["ours"], "requantized": results["requantized"], "perplexity_change": change,
            "eval_batches": eval_batches}


def requantization_report(config, params: dict, ternary_layers, quant: QuantConfig, replaced: dict,
                          eval_batches: int, log=print) -> dict:
    report = {"weight_error": weight_error(replaced)}
    we = report["weight_error"]
    log(f"requantized {we['tensors']} tensors to one scale per 256 weights: relative weight error "
        f"{we['relative_frobenius_error']:.4f} (worst {we['worst_tensor_relative_error']:.4f}, {we['worst_tensor']})")
    if eval_batches:
        report["held_out"] = held_out_perplexity_change(config, params, ternary_layers, quant, replaced, eval_batches)
        h = report["held_out"]
        log(f"held-out perplexity ({h['ours']['tokens']} tokens): ours {h['ours']['perplexity']:.3f}, "
            f"requantized {h['requantized']['perplexity']:.3f} ({100 * h['perplexity_change']:+.2f}%)")
    return report
