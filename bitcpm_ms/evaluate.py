"""`--run_mode eval`: validation loss, perplexity and bits per byte of a trained checkpoint.

Writes OUTPUT_DIR/eval.json. The checkpoint is `load_checkpoint` (file or directory) or, when
empty, the newest checkpoint under OUTPUT_DIR. The held-out data is the `validation` split of
the prepared dataset (see `prepared_root`); bits per byte uses its manifest's byte counts.
"""
import json
import os

from mindformers.models import build_network

from .checkpoints import find_checkpoint, load_weights
from .config_loader import ConfigError


def prepared_root(config) -> str:
    """The prepared dataset directory (holding manifest.json) that the run's data comes from:
    the eval / train dataset dirs or their parents, then data.output_dir. Its sequence length and
    vocabulary must fit the model, or evaluating it would be meaningless."""
    candidates = []
    for section in ("eval_dataset", "train_dataset"):
        path = ((config.get(section) or {}).get("data_loader") or {}).get("dataset_dir")
        if path:
            candidates += [path, os.path.dirname(os.path.normpath(path))]
    candidates.append((config.get("data") or {}).get("output_dir"))
    for path in candidates:
        manifest = os.path.join(path or "", "manifest.json")
        if path and os.path.isfile(manifest):
            with open(manifest, encoding="utf-8") as f:
                man = json.load(f)
            mc = config.model.model_config
            if int(man["seq_length"]) != int(mc.seq_length) or int(man["vocab_size"]) > int(mc.vocab_size):
                raise ConfigError(f"prepared dataset {path} (seq_length {man['seq_length']}, vocab "
                                  f"{man['vocab_size']}) does not fit the model (seq_length {mc.seq_length}, "
                                  f"vocab {mc.vocab_size})")
            return path
    raise ConfigError(f"no prepared dataset (manifest.json) found in {[c for c in candidates if c]}; "
                      "prepare data first: python run/prepare_data.py --config CONFIG")


def build_model(config):
    """The network of config.model through MindFormers' builder (registered BitCPM classes)."""
    from . import models  # noqa: F401  (registration)
    return build_network(config.model)


def run_eval(config, max_batches=None, checkpoint=None) -> int:
    from .evaluation import evaluate_on_prepared, write_eval_json
    ckpt = find_checkpoint(checkpoint or config.load_checkpoint or config.output_dir)
    data_dir = prepared_root(config)
    net = build_model(config)
    load_weights(net, ckpt)
    batch = int((config.get("eval_dataset") or {}).get("batch_size") or config.runner_config.batch_size)
    metrics = evaluate_on_prepared(net, data_dir, batch_size=batch, max_batches=max_batches)
    metrics["checkpoint"] = os.path.abspath(ckpt)
    metrics["quant"] = dict(config.model.model_config.get("qat_config") or {})
    path = write_eval_json(metrics, config.output_dir)
    bpb = metrics.get("bits_per_byte")
    print(f"eval {metrics['split']}: loss {metrics['loss']:.4f} | ppl {metrics['perplexity']:.2f} | "
          f"bits/byte {bpb:.4f} | {metrics['tokens']} tokens | wrote {path}" if bpb is not None else
          f"eval: loss {metrics['loss']:.4f} | ppl {metrics['perplexity']:.2f} | wrote {path}", flush=True)
    return 0
