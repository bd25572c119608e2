"""Checks that turn framework tracebacks into named errors, before anything slow starts.

Seen without them (issue 13): a model vocab_size smaller than the prepared data's gives
`Gather ... indices` out of range deep inside the first step; a seq_length that does not match
the packed samples gives `'Mul' broadcast`; a truncated MindRecord shard gives "Failed to read
file."; a negative learning rate trains "fine" (upwards). `check_config_values` runs when the
config is loaded, `check_training_data` before the Trainer is built.
"""
import math
import os
from typing import Optional

import mindspore.dataset as ds

from ..data.integrity import stale_sources, verify_dataset
from ..data.manifest import read_manifest_file
from ..errors import ConfigError, DataError
from ..parallel.once_per_node import verdict_once_per_node


def _number(value, where: str, low: float = None, high: float = None, low_open=False, integer=False):
    """`value` as a number within [low, high] (low excluded when `low_open`), else a ConfigError naming `where`."""
    ok_type = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type) or (not integer and not math.isfinite(value)):
        raise ConfigError(f"{where} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ConfigError(f"{where} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{where} must be <= {high}, got {value!r}")
    return value


def check_config_values(config) -> None:
    """Out-of-range numbers in the sections a training run reads, named by their YAML path."""
    lr = config.get("lr_schedule") or {}
    if "learning_rate" in lr:
        _number(lr["learning_rate"], "lr_schedule.learning_rate", 0, low_open=True)
    if lr.get("lr_end") is not None:
        _number(lr["lr_end"], "lr_schedule.lr_end", 0)
    for key in ("warmup_ratio", "decay_start_ratio"):
        if lr.get(key) is not None:
            _number(lr[key], f"lr_schedule.{key}", 0, 1)
    opt = config.get("optimizer") or {}
    if opt.get("weight_decay") is not None:
        _number(opt["weight_decay"], "optimizer.weight_decay", 0)
    if opt.get("eps") is not None:
        _number(opt["eps"], "optimizer.eps", 0, low_open=True)
    for i, beta in enumerate(opt.get("betas") or []):
        _number(beta, f"optimizer.betas[{i}]", 0, 1)
        if beta >= 1:
            raise ConfigError(f"optimizer.betas[{i}] must be < 1, got {beta!r}")
    rc = config.get("runner_config") or {}
    for key in ("batch_size", "epochs"):
        if rc.get(key) is not None:
            _number(rc[key], f"runner_config.{key}", 1, integer=True)
    wrapper = config.get("runner_wrapper") or {}
    for key in ("max_grad_norm", "scale_sense"):
        if isinstance(wrapper.get(key), (int, float)):
            _number(wrapper[key], f"runner_wrapper.{key}", 0, low_open=True)
    for section in ("train_dataset", "eval_dataset"):
        bs = (config.get(section) or {}).get("batch_size")
        if bs is not None:
            _number(bs, f"{section}.batch_size", 1, integer=True)
    limits = {"StopAtStep": ("stop_step", 1), "BitCPMMetricsMonitor": ("log_interval", 1)}
    for cb in config.get("callbacks") or []:
        kind = cb.get("type")
        if kind in limits and cb.get(limits[kind][0]) is not None:
            _number(cb[limits[kind][0]], f"callbacks.{kind}.{limits[kind][0]}", limits[kind][1], integer=True)
        if kind in ("CheckpointMonitor", "BitCPMCheckpointMonitor"):
            for key, low in (("save_checkpoint_steps", 1), ("keep_checkpoint_max", 0), ("preemption_check_steps", 1)):
                if cb.get(key) is not None:
                    _number(cb[key], f"callbacks.{kind}.{key}", low, integer=True)
    mc = config.model.model_config
    for key in ("vocab_size", "hidden_size", "num_layers", "num_heads", "seq_length", "intermediate_size"):
        if mc.get(key) is not None:
            _number(mc[key], f"model.model_config.{key}", 1, integer=True)
    if mc.get("hidden_size") and mc.get("num_heads") and mc.hidden_size % mc.num_heads:
        raise ConfigError(f"model.model_config.hidden_size {mc.hidden_size} is not a multiple of num_heads "
                          f"{mc.num_heads}")
    if mc.get("num_heads") and mc.get("n_kv_heads") and mc.num_heads % mc.n_kv_heads:
        raise ConfigError(f"model.model_config.num_heads {mc.num_heads} is not a multiple of n_kv_heads "
                          f"{mc.n_kv_heads}")


def _dataset_root(train_dir: str) -> Optional[str]:
    """The prepared dataset (directory with manifest.json) the train split belongs to, if any."""
    for d in (train_dir, os.path.dirname(os.path.normpath(train_dir))):
        if d and read_manifest_file(d) is not None:
            return d
    return None


def _first_row_length(files) -> Optional[int]:
    try:
        it = ds.MindDataset(files, columns_list=["input_ids"], shuffle=False, num_samples=1)
        for row in it.create_tuple_iterator(output_numpy=True, num_epochs=1):
            return int(row[0].shape[-1])
    except (RuntimeError, ValueError, KeyError) as err:
        raise DataError(f"cannot read the training data {files[0]}{' ...' if len(files) > 1 else ''}: "
                        f"{str(err).strip().splitlines()[0] if str(err).strip() else err}") from None
    return None


def check_training_data(config, files, verify_data: bool = False) -> None:
    """The train split fits the model (seq_length, vocabulary) and is intact (manifest sha256).

    A prepared dataset (with manifest.json) is checked against its manifest: shapes from it, shard
    hashes on first use (cached) or always with `verify_data`, and its corpus for changes since.
    Under msrun the hashing is done by one rank per node and every rank raises the same DataError
    (`parallel.once_per_node`); call this on every rank. Data without a manifest only gets the
    sample-length check (from its first row)."""
    loader = config.train_dataset.data_loader
    path = loader.get("dataset_dir") or loader.get("dataset_files")
    root = _dataset_root(path) if isinstance(path, str) else None
    mc = config.model.model_config
    if root is None:
        if verify_data:
            raise ConfigError(f"--verify_data: {path} has no manifest.json (not prepared by run/prepare_data.py); "
                              "there is nothing to verify it against")
        length = _first_row_length(files)
        if length is not None and length != int(mc.seq_length) + 1:
            raise ConfigError(f"training samples in {path} hold {length} tokens, the model needs seq_length + 1 = "
                              f"{int(mc.seq_length) + 1} (model.model_config.seq_length {mc.seq_length})")
        return
    man = read_manifest_file(root)
    if int(man["seq_length"]) != int(mc.seq_length):
        raise ConfigError(f"prepared dataset {root} has seq_length {man['seq_length']}, the model "
                          f"model.model_config.seq_length {mc.seq_length}; they must be equal")
    if int(man["vocab_size"]) > int(mc.vocab_size):
        raise ConfigError(f"prepared dataset {root} has a {man['vocab_size']}-token vocabulary, larger than "
                          f"model.model_config.vocab_size {mc.vocab_size}: token ids would be out of range")
    split = os.path.basename(os.path.normpath(path)) if os.path.normpath(path) != os.path.normpath(root) else None
    splits = (split,) if split in ("train", "validation") else ("train",)

    def check(tick):
        verify_dataset(root, splits=splits, force=verify_data, tick=tick)      # DataError: becomes the verdict
        changed = stale_sources(root, tick) if config.get("data") else []
        if changed:
            return (f"the corpus changed after {root} was prepared: {'; '.join(changed)}; prepare it again "
                    f"(python3 run/prepare_data.py --config CONFIG --overwrite)")
        return None

    problem = verdict_once_per_node(check)        # under msrun: hashed by one rank per node, not by every rank
    if problem:
        raise DataError(problem)
