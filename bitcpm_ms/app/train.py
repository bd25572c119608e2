"""`--run_mode train`: prepare the data on first use, then train with MindFormers' Trainer.

The Trainer builds the model (BitCPMForCausalLM, QAT when the config's `quant:` enables it), the
optimizer, the learning-rate schedule, our train-step wrapper and the callbacks from the YAML.
"""
import glob
import os

from mindformers import Trainer
from mindformers.tools.register import MindFormerConfig

from ..errors import ConfigError
from ..fileio import atomic_json
from ..training import preemption
from ..fileio import plain
from .documents import check_document_data
from .preflight import check_training_data
from .resume import configure_checkpoint_monitor, prepare_start, remove_resume_view
from .train_network import build_train_network, check_init_policy
from .trainer_rules import effective_gradient_accumulation
from ..data.config import config_from_dict
from ..data.packing import prepare_dataset


def ensure_prepared_data(config) -> None:
    """Prepare the `data:` section's dataset if the train dataset dir does not exist yet
    (a no-op when a matching prepared dataset is already there)."""
    loader = (config.get("train_dataset") or {}).get("data_loader") or {}
    path = loader.get("dataset_dir")
    if not config.get("data") or (path and os.path.exists(path)):
        return
    cfg = config_from_dict(config)
    print(f"preparing dataset {cfg.output_dir or '(default dir)'} from the data: section "
          "(once; later runs reuse it)", flush=True)
    prepare_dataset(cfg)


def dataset_files(section, name):
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


def prepare_callbacks(config) -> None:
    """Point our metrics callback at output_dir; `--max_steps` (runner_config.stop_step) sets
    the StopAtStep callback, which the metrics callback uses for its progress display; the metrics
    callback also gets the micro-batch / accumulation counts its loss divisor needs.

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
            # what the step's loss output sums over (pipeline micro-batches, accumulation,
            # interleave), as MindFormers passes them to its MFLossMonitor (training/metrics.py)
            cb["micro_batch_num"] = int((config.get("parallel_config") or {}).get("micro_batch_num") or 1)
            cb["gradient_accumulation_steps"] = effective_gradient_accumulation(config)
            cb["micro_batch_interleave_num"] = int(config.get("micro_batch_interleave_num") or 1)
            cb["calculate_per_token_loss"] = bool(config.get("calculate_per_token_loss", False))


def train(config, verify_data: bool = False) -> int:
    """Train as configured (the data must be prepared: see `ensure_prepared_data`). Returns 0, or
    `preemption.PREEMPTED_EXIT_STATUS` when a signal stopped it after saving a checkpoint."""
    check_init_policy(config)              # require_init_checkpoint: no ternary start from random weights
    files = dataset_files(config.train_dataset, "train_dataset")
    check_training_data(config, files, verify_data)
    check_document_data(config, files)     # use_eod_attn_mask_compression needs the actual_seq_len column
    start = prepare_start(config)          # a verified load_checkpoint / resume checkpoint
    prepare_callbacks(config)
    configure_checkpoint_monitor(config, start)
    atomic_json(plain(config), os.path.join(config.output_dir, "config_resolved.json"), indent=1)
    network = build_train_network(config)     # None: the Trainer builds config.model itself
    trainer = Trainer(args=config, task="text_generation", model=network)
    try:
        trainer.train(train_checkpoint=config.load_checkpoint or False,
                      resume_training=bool(config.resume_training))
    finally:
        remove_resume_view(config.output_dir)
    rank = os.environ.get("RANK_ID", "0") or "0"
    stopped = preemption.preempted()
    if stopped:
        print(f"Training stopped by {stopped['signal']} after step {stopped['step']} (rank {rank}): checkpoint "
              f"{stopped['checkpoint']}; continue with --resume_training true", flush=True)
        preemption.wait_for_peers()
        return preemption.PREEMPTED_EXIT_STATUS
    print(f"Training Over (rank {rank}): checkpoints in {os.path.join(config.output_dir, 'checkpoint')}, "
          f"metrics in {os.path.join(config.output_dir, 'metrics.jsonl')}", flush=True)
    return 0
