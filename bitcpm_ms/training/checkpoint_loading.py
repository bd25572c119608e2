"""Finding and loading checkpoints: the newest good one of a run, and a model's weights from a file.

`BitCPMCheckpointMonitor` writes `OUTPUT_DIR/checkpoint/rank_N/<prefix>_rank_N-<epoch>_<step>.ckpt`
with a sidecar (size, sha256, step; `training/checkpoint_files.py`); eval, predict, export,
conversion and resume all find checkpoints through this module, and none of them uses a file whose
sidecar says it is truncated or corrupt. Files without a sidecar (MindFormers' CheckpointMonitor,
other tools) are still accepted when MindSpore can read them.

Training loads its init (and teacher) checkpoint on every rank: the sha256 check is done by one
rank per node (`verify_once_per_node`), and `load_weights` reads only the model's parameters, one
at a time, instead of MindSpore's whole-file read (`training/checkpoint_reader.py`).
"""
import os
import sys
from typing import Callable, Optional

import mindspore as ms
from mindspore.train.serialization import tensor_to_ms_type

from ..errors import CheckpointError
from ..parallel.once_per_node import verdict_once_per_node
from . import checkpoint_reader
from .checkpoint_files import list_checkpoints, read_sidecar, verify_checkpoint


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


def _newest_good(directory: str, verify: Callable) -> str:
    """The newest checkpoint in `directory` that passes `verify` (files with a sidecar, by step),
    else the newest file without a sidecar; skipped bad files are named on stderr."""
    entries = list_checkpoints(directory)
    ours = [e for e in entries if e.sidecar is not None]
    for e in reversed(ours):
        problem = verify(e.path, e.sidecar)
        if problem is None:
            return e.path
        print(f"warning: checkpoint {e.path} {problem}; using an older one", file=sys.stderr, flush=True)
    if ours:
        raise CheckpointError(f"no good checkpoint in {directory}: every file with a sidecar failed verification")
    return entries[-1].path


def find_checkpoint(path: str, verify: Callable = verify_checkpoint) -> str:
    """A .ckpt file from a file path or a directory (newest file under DIR, DIR/rank_0 or
    DIR/checkpoint/rank_0, as the checkpoint callback writes them, that passes `verify`). A named
    file is returned as it is (`load_weights` or `verified_checkpoint` verify it)."""
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
            return _newest_good(d, verify)
    raise CheckpointError(f"no .ckpt file in {path} (looked in ., rank_0, checkpoint/rank_0)")


def verified_checkpoint(path: str, verify: Callable = verify_checkpoint) -> str:
    """`find_checkpoint`, and a named file with a sidecar is verified too (a directory's choice
    already is). `verify(path, sidecar)` -> problem or None; training passes
    `verify_once_per_node`, so that a 33 GB init checkpoint is hashed by one rank per node."""
    found = find_checkpoint(path, verify)
    if os.path.isfile(path):
        sidecar = read_sidecar(found)
        problem = verify(found, sidecar) if sidecar is not None else None
        if problem:
            raise CheckpointError(f"checkpoint {found} {problem}")
    return found


def verify_once_per_node(ckpt: str, sidecar: Optional[dict] = None) -> Optional[str]:
    """`verify_checkpoint` done by one rank per node, its verdict shared with every rank (call it on
    every rank of the job: it exchanges with them). One process verifies by itself."""
    return verdict_once_per_node(lambda tick: verify_checkpoint(ckpt, sidecar, tick=tick))


def _load_streaming(network, ckpt_path: str, wanted: dict) -> None:
    """Check names, shapes and types against the file's index, then read one parameter at a time
    into the network (`checkpoint_reader`: parameters not wanted, e.g. Adam moments, are skipped)."""
    entries = checkpoint_reader.index(ckpt_path)
    missing = sorted(set(wanted) - set(entries))
    if missing:
        raise CheckpointError(f"checkpoint {ckpt_path} lacks {len(missing)} model parameter(s), "
                              f"e.g. {missing[:3]}: is it from this model config?")
    for name, p in wanted.items():
        e = entries[name]
        shape = () if e.dims == (0,) else tuple(e.dims)
        if shape != tuple(p.shape):
            raise CheckpointError(f"checkpoint {ckpt_path}: {name} has shape {shape}, "
                                  f"the model expects {tuple(p.shape)}")
        dtype = tensor_to_ms_type.get(e.tensor_type)
        if dtype != p.dtype:
            raise CheckpointError(f"checkpoint {ckpt_path}: {name} is {e.tensor_type}, the model expects {p.dtype}")
    with open(ckpt_path, "rb") as f:
        for name, p in wanted.items():
            p.set_data(checkpoint_reader.read(ckpt_path, entries[name], f), p.sliced)
            if hasattr(p, "init_param"):        # as load_param_into_net: the data is set, not an initializer
                p.init_param = True


def _load_whole(network, ckpt_path: str, wanted: dict) -> list:
    """MindSpore's reader (map parameters, encrypted files): the whole file in memory at once."""
    params = read_checkpoint(ckpt_path)
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


def load_weights(network, ckpt_path: str, verify: Optional[Callable] = verify_checkpoint) -> list:
    """Load model weights (optimizer states in the file are not even read); every network parameter
    must be present with its shape and type, so a checkpoint of another architecture fails loudly
    before anything is loaded. A file with a sidecar must match it (size, sha256) unless `verify`
    is None (the caller verified it, e.g. through `verified_checkpoint`).

    The file is read one parameter at a time (`training/checkpoint_reader.py`): peak memory is the
    model itself, where `mindspore.load_checkpoint` held twice the file on top of it."""
    if verify is not None and read_sidecar(ckpt_path) is not None:
        problem = verify(ckpt_path, None)
        if problem:
            raise CheckpointError(f"checkpoint {ckpt_path} {problem}")
    if not os.path.isfile(ckpt_path):
        raise CheckpointError(f"checkpoint {ckpt_path} does not exist")
    if os.path.getsize(ckpt_path) == 0:
        raise CheckpointError(f"checkpoint {ckpt_path} is empty (0 bytes): an interrupted copy or save?")
    wanted = {p.name: p for p in network.get_parameters()}
    try:
        _load_streaming(network, ckpt_path, wanted)
    except checkpoint_reader.UnsupportedCheckpoint:
        return _load_whole(network, ckpt_path, wanted)
    return []
