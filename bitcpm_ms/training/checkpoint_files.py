"""Checkpoint files that are never half-written, and a sidecar that tells a good one from a bad one.

A training checkpoint is `OUTPUT_DIR/checkpoint/rank_N/<prefix>_rank_N-<epoch>_<step>.ckpt` (MindFormers'
naming, but one prefix for the whole run and the run's global step, also after resumes) plus its
sidecar `<same>.ckpt.json`:

    {"format": 1, "file": ..., "bytes": ..., "sha256": ..., "step": ..., "global_step": ...,
     "skipped_steps": ..., "epoch": ..., "rank": ..., "world_size": ..., "time": ..., + run info}

`step` counts every train step taken (optimizer steps + non-finite steps skipped); it is the step
the run continues after. Write order (`publish_checkpoint`):

    rank_N/.tmp-<pid>/NAME.ckpt  (MindSpore writes it)  -> fsync -> size + sha256
    -> rank_N/NAME.ckpt.json (atomic) -> os.replace(.tmp-<pid>/NAME.ckpt, rank_N/NAME.ckpt) -> fsync dir

so a `.ckpt` in rank_N/ always has a sidecar describing it. A kill at any point leaves either the
previous checkpoints untouched plus a `.tmp-<pid>` directory (removed by the next run once that
pid is gone) and perhaps a sidecar without its file (ignored, removed), or the complete new pair.
`verify_checkpoint` re-checks size and sha256 (bit rot, truncation, a copy cut short).
"""
import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from typing import Callable, List, Optional

from ..fileio import atomic_json, fsync_dir, pid_alive

FORMAT = 1
SIDECAR_SUFFIX = ".json"
TMP_PREFIX = ".tmp-"
_NAME_RE = re.compile(r"-(\d+)_(\d+)\.ckpt$")


def sidecar_path(ckpt: str) -> str:
    return ckpt + SIDECAR_SUFFIX


def checkpoint_name(prefix: str, rank: int, epoch: int, step_in_epoch: int) -> str:
    return f"{prefix}_rank_{rank}-{epoch}_{step_in_epoch}.ckpt"


def file_digest(path: str, tick: Optional[Callable[[], None]] = None):
    """(size in bytes, sha256 hex) of a file, read in 4 MiB blocks; `tick()` is called after each
    block (`parallel.once_per_node` keeps the waiting ranks' collectives alive through it)."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
            size += len(block)
            if tick is not None:
                tick()
    return size, h.hexdigest()


def read_sidecar(ckpt: str) -> Optional[dict]:
    """The sidecar of `ckpt`, or None when it has none or it is not valid JSON."""
    try:
        with open(sidecar_path(ckpt), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "sha256" in info and "bytes" in info else None


def verify_checkpoint(ckpt: str, sidecar: Optional[dict] = None, tick: Optional[Callable[[], None]] = None
                      ) -> Optional[str]:
    """None when `ckpt` matches its sidecar (size and sha256), else what is wrong, as a phrase that
    follows the file name: "is truncated: 1,024 of 4,096 bytes". `tick`: see `file_digest`."""
    if not os.path.isfile(ckpt):
        return "is missing"
    info = sidecar if sidecar is not None else read_sidecar(ckpt)
    if info is None:
        if os.path.exists(sidecar_path(ckpt)):
            return f"has an unreadable sidecar {os.path.basename(sidecar_path(ckpt))}"
        return "has no sidecar (not written by BitCPMCheckpointMonitor, or written before it existed)"
    size = os.path.getsize(ckpt)
    want = int(info["bytes"])
    if size == 0:
        return f"is empty (0 bytes; {want:,} expected)"
    if size < want:
        return f"is truncated: {size:,} of {want:,} bytes"
    if size != want:
        return f"has {size:,} bytes, its sidecar records {want:,}"
    _, sha = file_digest(ckpt, tick)
    if sha != info["sha256"]:
        return f"is corrupt: sha256 {sha[:12]}... does not match its sidecar ({info['sha256'][:12]}...)"
    return None


@dataclass
class CheckpointEntry:
    path: str
    sidecar: Optional[dict]     # None: a file without a sidecar (legacy / foreign)
    step: int                   # the sidecar's step; for legacy files the name's step in epoch

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def list_checkpoints(rank_dir: str) -> List[CheckpointEntry]:
    """The .ckpt files of one rank directory, oldest first: files with a sidecar by their step,
    then (all older) files without one by modification time."""
    with_sc, without = [], []
    for path in glob.glob(os.path.join(rank_dir, "*.ckpt")):
        info = read_sidecar(path)
        if info is not None:
            with_sc.append(CheckpointEntry(path, info, int(info["step"]) if info.get("step") is not None else -1))
        else:
            m = _NAME_RE.search(path)
            without.append(CheckpointEntry(path, None, int(m.group(2)) if m else -1))
    without.sort(key=lambda e: os.path.getmtime(e.path))
    with_sc.sort(key=lambda e: (e.step, os.path.getmtime(e.path)))
    return without + with_sc


def remove_dead_writes(rank_dir: str) -> List[str]:
    """Remove what killed writers left in `rank_dir`: `.tmp-<pid>` directories of dead processes and
    sidecars whose checkpoint never got renamed into place. Returns what was removed."""
    removed = []
    if not os.path.isdir(rank_dir):
        return removed
    for entry in os.listdir(rank_dir):
        full = os.path.join(rank_dir, entry)
        if entry.startswith(TMP_PREFIX) and os.path.isdir(full):
            try:
                pid = int(entry[len(TMP_PREFIX):])
            except ValueError:
                continue
            if pid != os.getpid() and not pid_alive(pid):
                shutil.rmtree(full, ignore_errors=True)
                removed.append(entry)
        elif entry.endswith(".ckpt" + SIDECAR_SUFFIX) and not os.path.exists(full[:-len(SIDECAR_SUFFIX)]):
            with contextlib.suppress(OSError):
                os.remove(full)
                removed.append(entry)
    return removed


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def publish_checkpoint(save_fn, rank_dir: str, name: str, info: dict) -> str:
    """Write a checkpoint with `save_fn(tmp_path)` (e.g. a call of `mindspore.save_checkpoint`) and
    publish it as `rank_dir/name` with its sidecar (`info` + file, bytes, sha256, time), in the
    order of the module docstring. Returns the published path."""
    os.makedirs(rank_dir, exist_ok=True)
    tmp_dir = os.path.join(rank_dir, f"{TMP_PREFIX}{os.getpid()}")
    os.makedirs(tmp_dir, exist_ok=True)
    tmp = os.path.join(tmp_dir, name)
    final = os.path.join(rank_dir, name)
    try:
        save_fn(tmp)
        _fsync_file(tmp)
        size, sha = file_digest(tmp)
        sidecar = dict(info, format=FORMAT, file=name, bytes=size, sha256=sha, time=time.time())
        atomic_json(sidecar, sidecar_path(final), indent=1)
        os.replace(tmp, final)
        fsync_dir(rank_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final


def prune_checkpoints(rank_dir: str, keep: int, protect: str) -> List[str]:
    """Delete the oldest checkpoints with a sidecar beyond the newest `keep` (files without a
    sidecar are not ours and are left alone). `protect` (the checkpoint just published) is never
    deleted. The .ckpt goes first, then its sidecar, so no .ckpt is ever left without one."""
    if keep is None or keep <= 0:
        return []
    ours = [e for e in list_checkpoints(rank_dir) if e.sidecar is not None]
    doomed = [e for e in ours[:-keep] if os.path.abspath(e.path) != os.path.abspath(protect)] if len(ours) > keep else []
    for e in doomed:
        with contextlib.suppress(OSError):
            os.remove(e.path)
        with contextlib.suppress(OSError):
            os.remove(sidecar_path(e.path))
    return [e.path for e in doomed]


def quarantine(ckpt: str) -> str:
    """Move a checkpoint that failed verification (and its sidecar) out of the way, to
    `<name>.corrupt`, so that no later run and no tool globbing *.ckpt picks it up. Returns the new name."""
    dest = ckpt + ".corrupt"
    with contextlib.suppress(OSError):
        os.replace(ckpt, dest)
    with contextlib.suppress(OSError):
        os.replace(sidecar_path(ckpt), dest + SIDECAR_SUFFIX)
    return dest
