"""Finding and loading checkpoints: the newest one of a run, and a model's weights from a file.

MindFormers' CheckpointMonitor writes `OUTPUT_DIR/checkpoint/rank_N/<prefix>-<epoch>_<step>.ckpt`;
eval, predict, export, conversion and resume all find checkpoints through this module.
"""
import glob
import os

import mindspore as ms

from ..errors import CheckpointError


def checkpoint_dir(output_dir: str) -> str:
    """Where a run's CheckpointMonitor writes: OUTPUT_DIR/checkpoint (with rank_N/ below)."""
    return os.path.join(output_dir, "checkpoint")


def find_checkpoint(path: str) -> str:
    """A .ckpt file from a file path or a directory (newest file under DIR, DIR/rank_0 or
    DIR/checkpoint/rank_0, as MindFormers' CheckpointMonitor writes them)."""
    if not path:
        raise CheckpointError("no checkpoint given")
    if os.path.isfile(path):
        if not path.endswith(".ckpt"):
            raise CheckpointError(f"{path} is not a .ckpt file")
        return path
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint path {path} does not exist")
    for sub in ("", "rank_0", os.path.join("checkpoint", "rank_0")):
        files = glob.glob(os.path.join(path, sub, "*.ckpt"))
        if files:
            return max(files, key=os.path.getmtime)
    raise CheckpointError(f"no .ckpt file in {path} (looked in ., rank_0, checkpoint/rank_0)")


def resume_dir(output_dir: str) -> str:
    """The checkpoint directory `--resume_training` continues from; an error if it holds none."""
    ckpt_dir = checkpoint_dir(output_dir)
    if not glob.glob(os.path.join(ckpt_dir, "rank_*", "*.ckpt")):
        raise CheckpointError(f"--resume_training: no checkpoint found under {ckpt_dir}")
    return ckpt_dir


def load_weights(network, ckpt_path: str) -> list:
    """Load model weights (optimizer states in the file are ignored); every network parameter
    must be present with its shape, so a checkpoint of another architecture fails loudly."""
    try:
        params = ms.load_checkpoint(ckpt_path)
    except (RuntimeError, ValueError, OSError) as err:
        raise CheckpointError(f"cannot read checkpoint {ckpt_path}: {err}") from None
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
