"""What `run/run_bitcpm.py` does once its config is loaded: set up MindSpore, then train,
evaluate or sample through MindFormers.
"""
import glob
import json
import os
import sys

import mindspore as ms
from mindformers import Trainer
from mindformers.core.context import build_context
from mindformers.tools.register import MindFormerConfig

from . import models as _models          # noqa: F401  (registers BitCPMConfig / BitCPMForCausalLM)
from . import training as _training      # noqa: F401  (registers the wrapper and the callback)
from .data import mf_tokenizer as _tok    # noqa: F401  (registers BitCPMTokenizer)
from .config_loader import ConfigError


def _dataset_files(section, name):
    """Check a dataset section points at existing MindRecord data; returns the list of files."""
    loader = (section or {}).get("data_loader", {})
    path = loader.get("dataset_dir") or loader.get("dataset_files")
    if not path:
        raise ConfigError(f"{name}.data_loader.dataset_dir is empty: prepare data first "
                          f"(python run/prepare_data.py --config ...) or pass --{name}.data_loader.dataset_dir DIR")
    paths = path if isinstance(path, (list, tuple)) else [path]
    files = []
    for p in paths:
        if os.path.isdir(p):
            files += [f for f in sorted(glob.glob(os.path.join(p, "*.mindrecord*"))) if not f.endswith(".db")]
        elif os.path.isfile(p):
            files.append(p)
    if not files:
        raise ConfigError(f"{name}.data_loader.dataset_dir={path!r}: no MindRecord files found there")
    return files


def _prepare_callbacks(config):
    """Point our metrics callback at output_dir; `--max_steps` (runner_config.stop_step) sets
    the StopAtStep callback, which the metrics callback uses for its progress display.

    (MindFormers 1.9.0 builds a TrainCallBack for runner_config.stop_step but never adds it to
    the callback list, and it would count from 0 again in a resumed run.)
    """
    callbacks = config.get("callbacks") or []
    stop = config.runner_config.get("stop_step")
    stops = [cb for cb in callbacks if cb.get("type") == "StopAtStep"]
    if stop:
        if stops:
            stops[0]["stop_step"] = int(stop)
        else:
            callbacks.append(MindFormerConfig(type="StopAtStep", stop_step=int(stop)))
            stops = callbacks[-1:]
    config.callbacks = callbacks
    for cb in callbacks:
        if cb.get("type") == "BitCPMMetricsMonitor":
            cb.setdefault("output_dir", config.output_dir)
            if stops:
                cb["total_steps"] = int(stops[0]["stop_step"])


def _check_graph_mode():
    if ms.get_context("mode") != ms.GRAPH_MODE:
        raise RuntimeError("MindSpore is not in GRAPH_MODE after build_context (context.mode must be 0); "
                           "PyNative training is ~100x slower on CPU")


def run(config: MindFormerConfig, args) -> int:
    config.output_dir = os.path.abspath(config.output_dir)
    os.makedirs(config.output_dir, exist_ok=True)
    build_context(config)
    _check_graph_mode()
    mode = config.run_mode
    if mode == "train":
        return train(config)
    if mode == "eval":
        from .evaluate import run_eval
        return run_eval(config, max_batches=args.eval_max_batches)
    if mode == "predict":
        from .generate import run_predict
        return run_predict(config, prompt=args.prompt, max_new_tokens=args.max_new_tokens)
    raise ConfigError(f"run_mode must be train, eval or predict, got {mode!r}")


def ensure_prepared_data(config: MindFormerConfig) -> None:
    """Prepare the `data:` section's dataset if the train dataset dir does not exist yet
    (a no-op when a matching prepared dataset is already there)."""
    loader = (config.get("train_dataset") or {}).get("data_loader") or {}
    path = loader.get("dataset_dir")
    if not config.get("data") or (path and os.path.exists(path)):
        return
    from .data.config import config_from_dict
    from .data.packing import prepare_dataset
    cfg = config_from_dict(config)
    print(f"preparing dataset {cfg.output_dir or '(default dir)'} from the data: section "
          "(once; later runs reuse it)", flush=True)
    prepare_dataset(cfg)


def train(config: MindFormerConfig) -> int:
    ensure_prepared_data(config)
    _dataset_files(config.train_dataset, "train_dataset")
    if config.resume_training and not config.load_checkpoint:
        config.load_checkpoint = latest_checkpoint_dir(config.output_dir)
    _prepare_callbacks(config)
    with open(os.path.join(config.output_dir, "config_resolved.json"), "w", encoding="utf-8") as f:
        json.dump(_plain(config), f, indent=1, default=str)
    trainer = Trainer(args=config, task="text_generation")
    trainer.train(train_checkpoint=config.load_checkpoint or False,
                  resume_training=bool(config.resume_training))
    if config.get("eval_after_train") and _is_rank0():
        from .evaluate import prepared_root, run_eval
        try:
            prepared_root(config)
        except ConfigError as err:
            print(f"warning: eval_after_train skipped: {err}", file=sys.stderr, flush=True)
            return 0
        return run_eval(config, checkpoint=config.output_dir)
    return 0


def _is_rank0() -> bool:
    return int(os.environ.get("RANK_ID", "0") or 0) == 0


def latest_checkpoint_dir(output_dir: str) -> str:
    """The checkpoint directory MindFormers' CheckpointMonitor wrote under output_dir."""
    ckpt_dir = os.path.join(output_dir, "checkpoint")
    if not glob.glob(os.path.join(ckpt_dir, "rank_*", "*.ckpt")):
        raise ConfigError(f"--resume_training: no checkpoint found under {ckpt_dir}")
    return ckpt_dir


def _plain(obj):
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
