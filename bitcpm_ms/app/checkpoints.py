"""Finding and loading checkpoints: the newest good one of a run, and a model's weights from a file.

`BitCPMCheckpointMonitor` writes `OUTPUT_DIR/checkpoint/rank_N/<prefix>_rank_N-<epoch>_<step>.ckpt`
with a sidecar (size, sha256, step; `training/checkpoint_files.py`); eval, predict, export,
conversion and resume all find checkpoints through this module, and none of them uses a file whose
sidecar says it is truncated or corrupt. Files without a sidecar (MindFormers' CheckpointMonitor,
other tools) are still accepted when MindSpore can read them.
"""
import os
import sys

import mindspore as ms

from ..errors import CheckpointError
from ..training.checkpoint_files import list_checkpoints, read_sidecar, verify_checkpoint


def checkpoint_dir(output_dir: str) -> str:
    """Where a run's checkpoint callback writes: OUTPUT_DIR/checkpoint (with rank_N/ below)."""
    return os.path.join(output_dir, "checkpoint")


def read_checkpoint(path: str, choice_func=None) -> dict:
    """`mindspore.load_checkpoint` with a CheckpointError naming the file when it cannot be read
    (MindSpore's own message for an empty file is "the parameter dict is empty ... filter_prefix")."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted copy or save?")
    try:
        return ms.load_checkpoint(path, choice_func=choice_func)
    except (RuntimeError, ValueError, OSError, TypeError) as err:
        if choice_func is not None and "empty after filter" in str(err):
            return {}                          # readable, but holds none of the chosen names
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path} ({os.path.getsize(path):,} bytes): not a complete "
                              f"MindSpore checkpoint ({first})") from None


def _newest_good(directory: str) -> str:
    """The newest checkpoint in `directory` that passes `verify_checkpoint` (files with a sidecar,
    by step), else the newest file without a sidecar; skipped bad files are named on stderr."""
    entries = list_checkpoints(directory)
    ours = [e for e in entries if e.sidecar is not None]
    for e in reversed(ours):
        problem = verify_checkpoint(e.path, e.sidecar)
        if problem is None:
            return e.path
        print(f"warning: checkpoint {e.path} {problem}; using an older one", file=sys.stderr, flush=True)
    if ours:
        raise CheckpointError(f"no good checkpoint in {directory}: every file with a sidecar failed verification")
    return entries[-1].path


def find_checkpoint(path: str) -> str:
    """A .ckpt file from a file path or a directory (newest good file under DIR, DIR/rank_0 or
    DIR/checkpoint/rank_0, as the checkpoint callback writes them)."""
    if not path:
        raise CheckpointError("no checkpoint given")
    if os.path.isfile(path):
        if not path.endswith(".ckpt"):
            raise CheckpointError(f"{path} is not a .ckpt file")
        return path
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint path {path} does not exist")
    for sub in ("", "rank_0", os.path.join("checkpoint", "rank_0")):
        d = os.path.join(path, sub)
        if os.path.isdir(d) and list_checkpoints(d):
            return _newest_good(d)
    raise CheckpointError(f"no .ckpt file in {path} (looked in ., rank_0, checkpoint/rank_0)")


def load_weights(network, ckpt_path: str) -> list:
    """Load model weights (optimizer states in the file are ignored); every network parameter
    must be present with its shape, so a checkpoint of another architecture fails loudly. A file
    with a sidecar must match it (size, sha256)."""
    if read_sidecar(ckpt_path) is not None:
        problem = verify_checkpoint(ckpt_path)
        if problem:
            raise CheckpointError(f"checkpoint {ckpt_path} {problem}")
    params = read_checkpoint(ckpt_path)
    wanted = {p.name: p for p in network.get_parameters()}
    missing = sorted(set(wanted) - set(params))
    if missing:
        raise CheckpointError(f"checkpoint {ckpt_path} lacks {len(missing)} model parameter(s), "
                              f"e.g. {missing[:3]}: is it from this model config?")
    for name, p in wanted.items():
        if tuple(params[name].shape) != tuple(p.shape):
            raise CheckpointError(f"checkpoint {ckpt_path}: {name} has shape {tuple(params[name].shape)}, "
                                  f"the model expects {tuple(p.shape)}")
    not_loaded, _ = ms.load_param_into_net(network, {k: params[k] for k in wanted}, strict_load=True)
    return not_loaded
