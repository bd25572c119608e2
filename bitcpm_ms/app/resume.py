"""Which checkpoint a training run starts from: verified, with a fallback, the same step on every rank.

`prepare_start(config)` runs before MindFormers' Trainer. For `--resume_training true` (and for
`--load_checkpoint DIR`) it picks the newest checkpoint of this rank whose size and sha256 match
its sidecar; a truncated, corrupt or unreadable newer file is named on stderr, moved aside to
`<name>.corrupt` (when it lies in this run's own output_dir) and the next older one is tried. Under
msrun the ranks exchange their choices (`parallel.agreement.gather_ints`) and all take the newest
step that is good on every rank, so a rank killed in the middle of a save does not leave the job
resuming from mixed steps. An explicitly named file is verified too, but never replaced by another.
The Trainer then gets that one verified file as `load_checkpoint`.

A checkpoint of another architecture (other hidden_size, layers, vocabulary, heads) is refused by
name before anything is built; other differences (quantizer, schedule, batch) only warn.
"""
import contextlib
import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import mindspore as ms

from ..errors import CheckpointError, ConfigError
from ..parallel.agreement import gather_ints, world
from ..training.checkpoint_files import list_checkpoints, quarantine, read_sidecar, verify_checkpoint
from ..training.checkpointing import append_event
from ..training.checkpoint_loading import checkpoint_dir, read_checkpoint
from ..fileio import plain
from mindformers.trainer import utils as mf_trainer_utils
from ..parallel.agreement import barrier

ARCH_KEYS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "n_kv_heads", "intermediate_size",
             "tie_word_embeddings")
MODEL_KEYS = ARCH_KEYS + ("seq_length", "scale_emb", "scale_depth", "dim_model_base", "rms_norm_eps", "qat_config")
TRAINING_SECTIONS = ("optimizer", "lr_schedule", "runner_wrapper")
RESUME_VIEW = ".resume"


def run_info(config) -> dict:
    """What every checkpoint sidecar of this run records about the config: the model (architecture
    and quantizer), the training sections, and a fingerprint of both."""
    mc = config.model.model_config
    model = {k: plain(mc.get(k)) for k in MODEL_KEYS}
    training = {s: plain(config.get(s)) for s in TRAINING_SECTIONS}
    training["batch_size"] = config.runner_config.get("batch_size")
    training["data_parallel"] = (config.get("parallel_config") or {}).get("data_parallel")
    blob = json.dumps({"model": model, "training": training}, sort_keys=True, default=str)
    return {"model": model, "training": training, "config_fingerprint": hashlib.sha256(blob.encode()).hexdigest()[:16]}


def _diff(old: dict, new: dict, keys) -> List[str]:
    """Differences in `keys` that `old` records (a converted checkpoint records fewer keys)."""
    return [f"{k} {old.get(k)!r} (this config: {new.get(k)!r})" for k in keys if k in old and old[k] != new.get(k)]


def check_same_model(ckpt: str, config, sidecar: Optional[dict]) -> None:
    """CheckpointError when `ckpt` was written for another architecture; a warning for other changes."""
    now = run_info(config)
    if sidecar is not None and isinstance(sidecar.get("model"), dict):
        arch = _diff(sidecar["model"], now["model"], ARCH_KEYS)
        if arch:
            raise CheckpointError(f"checkpoint {ckpt} is of another architecture: {', '.join(arch)}")
        other = _diff(sidecar["model"], now["model"], MODEL_KEYS[len(ARCH_KEYS):])
        other += _diff(sidecar.get("training") or {}, now["training"], sorted(now["training"]))
        if other:
            print(f"warning: {os.path.basename(ckpt)} was saved with a different config: {'; '.join(other)}",
                  file=sys.stderr, flush=True)
        return
    _check_shapes(ckpt, config)


def _check_shapes(ckpt: str, config) -> None:
    """For a checkpoint without a sidecar: its embedding and first attention weight must have this
    config's shapes, and it must hold this config's number of layers."""
    mc = config.model.model_config
    emb, wq = "model.tok_embeddings.embedding_weight", "model.layers.0.attention.wq.weight"
    params = read_checkpoint(ckpt, choice_func=lambda n: n in (emb, wq) or n.endswith(".attention_norm.weight"))
    want = {emb: (int(mc.vocab_size), int(mc.hidden_size)), wq: (int(mc.hidden_size), int(mc.hidden_size))}
    for name, shape in want.items():
        if name not in params:
            raise CheckpointError(f"checkpoint {ckpt} has no {name}: is it a BitCPM / LLaMA checkpoint?")
        got = tuple(params[name].shape)
        if got != shape:
            raise CheckpointError(f"checkpoint {ckpt} is of another architecture: {name} has shape {got}, "
                                  f"this config expects {shape} (vocab_size {mc.vocab_size}, hidden_size "
                                  f"{mc.hidden_size})")
    layers = sum(n.endswith(".attention_norm.weight") for n in params)
    if layers != int(mc.num_layers):
        raise CheckpointError(f"checkpoint {ckpt} is of another architecture: {layers} layers, this config has "
                              f"num_layers {mc.num_layers}")


@dataclass
class StartPoint:
    path: str
    step: Optional[int]
    sidecar: Optional[dict]
    rejected: List[Tuple[str, str]] = field(default_factory=list)    # (file, what is wrong)


def rank_dir_for(path: str, rank: int) -> Optional[str]:
    """The directory holding this rank's checkpoints under `path` (a checkpoint dir, an output dir
    or a rank dir). A rank with no directory of its own uses rank_0's (resuming a data-parallel
    run with more workers, whose replicas are identical)."""
    for r in dict.fromkeys((rank, 0)):
        for sub in (f"rank_{r}", os.path.join("checkpoint", f"rank_{r}")):
            d = os.path.join(path, sub)
            if os.path.isdir(d):
                return d
    return path if list_checkpoints(path) else None


def _verify_explicit(path: str) -> StartPoint:
    if not path.endswith(".ckpt"):
        raise CheckpointError(f"{path} is not a .ckpt file")
    sidecar = read_sidecar(path)
    if sidecar is not None:
        problem = verify_checkpoint(path, sidecar)
        if problem:
            raise CheckpointError(f"checkpoint {path} {problem}")
        return StartPoint(path, int(sidecar.get("step", 0)), sidecar)
    read_checkpoint(path, choice_func=lambda n: n == "step_num")      # readable at all?
    return StartPoint(path, None, None)


def _choose_in_dir(rank_dir: str, may_quarantine: bool) -> StartPoint:
    entries = list_checkpoints(rank_dir)
    ours = [e for e in entries if e.sidecar is not None]
    if not ours:        # only files without sidecars (MindFormers' CheckpointMonitor): newest readable one
        rejected = []
        for e in reversed(entries):
            try:
                read_checkpoint(e.path, choice_func=lambda n: n == "step_num")
                return StartPoint(e.path, None, None, rejected)
            except CheckpointError as err:
                rejected.append((e.path, str(err)))
        raise CheckpointError(f"no usable checkpoint in {rank_dir}: " + "; ".join(r for _, r in rejected))
    verdict = {}                   # step -> (entry, problem or None), verified lazily

    def check(e):
        if e.step not in verdict:
            verdict[e.step] = (e, verify_checkpoint(e.path, e.sidecar))
        return verdict[e.step][1] is None

    by_step = {e.step: e for e in ours}
    bound = None
    while True:
        mine = next((e.step for e in reversed(ours) if (bound is None or e.step <= bound) and check(e)), -1)
        choice = int(gather_ints([mine])[:, 0].min())          # the newest step good on every rank ...
        ok = int(choice in by_step and check(by_step[choice]))
        if choice >= 0 and gather_ints([ok]).min() == 1:        # ... if every rank has it
            break
        if choice < 0:
            break
        bound = choice - 1
    rejected = []
    for step, (e, problem) in sorted(verdict.items(), reverse=True):
        if problem is not None:
            moved = quarantine(e.path) if may_quarantine else None
            rejected.append((e.path, problem + (f" (moved to {os.path.basename(moved)})" if moved else "")))
    if choice < 0:
        detail = "; ".join(f"{os.path.basename(p)} {r}" for p, r in rejected) or "none on some rank"
        raise CheckpointError(f"no good checkpoint in {rank_dir} (on every rank): {detail}")
    e = by_step[choice]
    return StartPoint(e.path, e.step, e.sidecar, rejected)


def choose_start(path: str, may_quarantine: bool = False) -> StartPoint:
    """The verified checkpoint to start from, for a file or a directory (see the module docstring)."""
    if os.path.isfile(path) or path.endswith(".ckpt"):
        if not os.path.exists(path):
            raise CheckpointError(f"checkpoint {path} does not exist")
        return _verify_explicit(path)
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint path {path} does not exist")
    rank = world()[0]
    rank_dir = rank_dir_for(path, rank)
    if rank_dir is None:
        raise CheckpointError(f"no .ckpt file in {path} (looked in ., rank_{rank}, checkpoint/rank_{rank})")
    return _choose_in_dir(rank_dir, may_quarantine)


def _last_logged_step(output_dir: str) -> Optional[int]:
    try:
        with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
            steps = [r["step"] for r in map(json.loads, filter(str.strip, f)) if "step" in r]
    except (OSError, ValueError):
        return None
    return max(steps) if steps else None


def _check_layout(start: StartPoint, config) -> None:
    """Sliced (model / pipeline parallel) checkpoints resume only on the layout that wrote them;
    data-parallel replicas resume on any number of ranks."""
    saved = (start.sidecar or {}).get("world_size")
    pc = config.get("parallel_config") or {}
    sliced = int(pc.get("model_parallel") or 1) * int(pc.get("pipeline_stage") or 1) > 1
    if saved is not None and sliced and int(saved) != world()[1]:
        raise CheckpointError(f"checkpoint {start.path} was written by {saved} ranks; this run has {world()[1]} with "
                              "model/pipeline parallelism, which needs resharding (auto_trans_ckpt from a full "
                              "checkpoint), not --resume_training")


def _cpu_safe_preload_barrier() -> None:
    """MindFormers 1.9.0 waits in `comm_func.barrier()` after preloading a checkpoint in a parallel
    run, which has no CPU kernel ("Unsupported op [Barrier] on CPU"): every msrun job on CPU that
    loads a checkpoint failed there. Use the AllGather barrier on CPU."""
    if ms.get_context("device_target") == "CPU":
        mf_trainer_utils.barrier = barrier


def resume_view(output_dir: str, ckpt: str) -> str:
    """OUTPUT_DIR/checkpoint/.resume with rank_<r>/ holding a hard link to `ckpt` (a symlink where
    hard links are impossible), for MindFormers' resume path. Returns the .resume directory."""
    root = os.path.join(checkpoint_dir(output_dir), RESUME_VIEW)
    rank_dir = os.path.join(root, f"rank_{world()[0]}")
    shutil.rmtree(rank_dir, ignore_errors=True)
    os.makedirs(rank_dir)
    link = os.path.join(rank_dir, os.path.basename(ckpt))
    try:
        os.link(ckpt, link)
    except OSError:
        os.symlink(os.path.abspath(ckpt), link)
    return root


def remove_resume_view(output_dir: str) -> None:
    """Drop this rank's link (it would keep a pruned checkpoint's disk space in use)."""
    root = os.path.join(checkpoint_dir(output_dir), RESUME_VIEW)
    shutil.rmtree(os.path.join(root, f"rank_{world()[0]}"), ignore_errors=True)
    with contextlib.suppress(OSError):
        os.rmdir(root)                  # when the other ranks' links are gone too


def prepare_start(config) -> Optional[StartPoint]:
    """Resolve `load_checkpoint` / `resume_training` to one verified file (sets config.load_checkpoint)."""
    resume = bool(config.get("resume_training"))
    path = config.get("load_checkpoint") or (checkpoint_dir(config.output_dir) if resume else None)
    if not path:
        return None
    if config.get("auto_trans_ckpt"):
        if not resume:          # a full checkpoint MindFormers reshards to this layout itself: hand it over
            return None
        # this run's own checkpoints already have this run's layout: nothing to reshard (unverified on Ascend)
        config.auto_trans_ckpt = False
    own = os.path.abspath(config.output_dir) + os.sep
    if resume and not config.get("load_checkpoint") and not os.path.isdir(path):
        raise CheckpointError(f"--resume_training: no checkpoint found under {path}")
    start = choose_start(path, may_quarantine=os.path.abspath(path).startswith(own))
    for bad, problem in start.rejected:
        print(f"warning: checkpoint {bad} {problem}; not used", file=sys.stderr, flush=True)
    if start.rejected:
        print(f"warning: falling back to {start.path} (step {start.step})", file=sys.stderr, flush=True)
    check_same_model(start.path, config, start.sidecar)
    _check_layout(start, config)
    config.load_checkpoint = start.path
    if world()[1] > 1:
        _cpu_safe_preload_barrier()
    if resume:
        # MindFormers 1.9.0 resumes only from a directory of rank_N/ folders (a file is refused as
        # "not a directory"), taking the newest file of each: give it one holding just this file
        config.load_checkpoint = resume_view(config.output_dir, start.path)
        config.resume_by_last_timestamp_ckpt = True       # no ./output/resume_record bookkeeping
        last = _last_logged_step(config.output_dir)
        append_event(config.output_dir, {
            "event": "resume", "from_step": start.step, "checkpoint": start.path,
            "rejected": [{"file": p, "problem": r} for p, r in start.rejected],
            "superseded_steps": [start.step + 1, last] if (last and start.step is not None and last > start.step)
            else None})
    return start


SAFE_MONITOR = "BitCPMCheckpointMonitor"
_MONITOR_KEYS = ("type", "prefix", "save_checkpoint_steps", "keep_checkpoint_max", "integrated_save", "async_save")
_OUR_KEYS = _MONITOR_KEYS + ("preemption_check_steps",)      # ours only: MindFormers' CheckpointMonitor lacks it


def configure_checkpoint_monitor(config, start: Optional[StartPoint]) -> None:
    """Make the run's checkpoint callback our crash-safe one, first in the list (it restores
    skipped_steps before the other callbacks read the step count), writing to output_dir."""
    callbacks = list(config.get("callbacks") or [])
    for cb in callbacks:
        if cb.get("type") == "CheckpointMonitor":
            extra = sorted(k for k, v in cb.items() if k not in _MONITOR_KEYS and v not in (None, False, 0, ""))
            if extra:
                raise ConfigError(f"callbacks.CheckpointMonitor: {extra} not supported by {SAFE_MONITOR}, which "
                                  "replaces it (supported: prefix, save_checkpoint_steps, keep_checkpoint_max, "
                                  "integrated_save, async_save)")
            for k in [k for k in cb if k not in _MONITOR_KEYS]:
                del cb[k]
            cb["type"] = SAFE_MONITOR
            print(f"note: callbacks.CheckpointMonitor is replaced by {SAFE_MONITOR} (same arguments; atomic, "
                  "verified checkpoints)", file=sys.stderr, flush=True)
    monitors = [cb for cb in callbacks if cb.get("type") == SAFE_MONITOR]
    for cb in monitors:
        unknown = sorted(set(cb) - set(_OUR_KEYS))
        if unknown:
            raise ConfigError(f"callbacks.{SAFE_MONITOR}: unknown argument(s) {unknown} (supported: prefix, "
                              "save_checkpoint_steps, keep_checkpoint_max, integrated_save, async_save, "
                              "preemption_check_steps)")
        cb["directory"] = config.output_dir
        cb["run_info"] = run_info(config)
        cb["resume_checkpoint"] = start.path if (start is not None and config.get("resume_training")) else None
    config.callbacks = monitors + [cb for cb in callbacks if cb.get("type") != SAFE_MONITOR]
