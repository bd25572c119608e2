"""`--run_mode eval`: validation loss, perplexity and bits per byte of a trained checkpoint.

Writes OUTPUT_DIR/eval.json. The checkpoint is `load_checkpoint` (file or directory) or, when
empty, the newest checkpoint under OUTPUT_DIR. The held-out data is the `validation` split of
the prepared dataset that `artifacts.resolve` found; bits per byte uses its manifest's byte
counts (definitions: `bitcpm_ms.training.evaluation`).
"""
import os

from ..training.evaluation import evaluate_on_prepared, write_eval_json
from .artifacts import Artifacts, load_model, model_checkpoint


def run_eval(config, art: Artifacts, max_batches=None, checkpoint=None) -> int:
    net, ckpt = load_model(config, checkpoint or model_checkpoint(config, art))
    batch = int((config.get("eval_dataset") or {}).get("batch_size") or config.runner_config.batch_size)
    metrics = evaluate_on_prepared(net, art.need_dataset(), batch_size=batch, max_batches=max_batches)
    metrics["checkpoint"] = os.path.abspath(ckpt)
    metrics["quant"] = dict(config.model.model_config.get("qat_config") or {})
    path = write_eval_json(metrics, art.output_dir)
    bpb = metrics.get("bits_per_byte")
    print(f"eval {metrics['split']}: loss {metrics['loss']:.4f} | ppl {metrics['perplexity']:.2f} | "
          f"bits/byte {bpb:.4f} | {metrics['tokens']} tokens | wrote {path}" if bpb is not None else
          f"eval: loss {metrics['loss']:.4f} | ppl {metrics['perplexity']:.2f} | wrote {path}", flush=True)
    return 0
