"""Writing files and directories so that a crash never leaves a half-written result.

Every writer in bitcpm-ms that produces an artifact (manifests, eval.json, tokenizers, exports,
Hugging Face directories, prepared datasets) goes through these helpers: write under a temporary
name in the same directory, fsync, then `os.replace` into place. A reader therefore sees either
the old complete file or the new complete one. Temporary names carry the writer's PID, so a
later run can tell the leftovers of a dead process (`remove_stale_tmp`) from a live writer's.
"""
import contextlib
import json
import os
import shutil

import numpy as np

from .errors import BitCPMError


def tmp_name(path: str) -> str:
    """The temporary sibling of `path` that this process writes before renaming."""
    return f"{os.path.abspath(path).rstrip(os.sep)}.tmp-{os.getpid()}"


def _fsync_dir(path: str) -> None:
    """Make a rename in `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


fsync_dir = _fsync_dir


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "wb", encoding: str = None, tmp: str = None):
    """`with atomic_write(p, "w") as f: f.write(...)`: the file appears at `p` complete or not at all.
    `tmp`: the temporary name, when `tmp_name`'s (path + pid) is not unique enough, e.g. for a file
    that processes on several hosts of a shared file system may write at once."""
    tmp = tmp or tmp_name(path)
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def publish_file(tmp: str, path: str) -> None:
    """fsync a file another library wrote at `tmp` (e.g. MindSpore's save_checkpoint) and rename it to `path`."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _json_default(o):
    """numpy scalars as Python numbers; anything else unknown as its str()."""
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    return str(o)


def atomic_json(obj, path: str, indent: int = 2, tmp: str = None) -> str:
    """Write `obj` as JSON to `path` atomically (`tmp`: see `atomic_write`); returns `path`."""
    with atomic_write(path, "w", encoding="utf-8", tmp=tmp) as f:
        json.dump(obj, f, indent=indent, sort_keys=True, ensure_ascii=False, default=_json_default)
        f.write("\n")
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_tmp(path: str) -> None:
    """Delete `path.tmp-<pid>` / `path.old-<pid>` leftovers whose writer process is gone."""
    parent, base = os.path.split(os.path.abspath(path).rstrip(os.sep))
    if not os.path.isdir(parent):
        return
    for entry in os.listdir(parent):
        if not (entry.startswith(base + ".tmp-") or entry.startswith(base + ".old-")):
            continue
        try:
            pid = int(entry.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not pid_alive(pid):
            full = os.path.join(parent, entry)
            if os.path.isdir(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(full)


def check_output_dir(out_dir: str, overwrite: bool = False, error=BitCPMError) -> None:
    """Refuse an output directory that exists and is not empty, unless `overwrite`."""
    if os.path.exists(out_dir) and not overwrite and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise error(f"output directory {out_dir} exists and is not empty; choose another one (nothing in it "
                    "was changed)")


def _fsync_tree(root: str) -> None:
    """fsync every file and directory under `root` (before a rename publishes it)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            with open(path, "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(dirpath)


@contextlib.contextmanager
def atomic_dir(out_dir: str, overwrite: bool = False, error=BitCPMError):
    """Build a directory under a temporary name and move it into place when the block succeeds.

    `with atomic_dir("out") as tmp: write files into tmp`. A non-empty existing `out_dir` is an
    error unless `overwrite`; then it is replaced only after the new one is complete (every file
    in it fsynced, then the directory renamed).
    """
    out_dir = os.path.abspath(out_dir).rstrip(os.sep)
    check_output_dir(out_dir, overwrite, error)
    remove_stale_tmp(out_dir)
    tmp = tmp_name(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        yield tmp
        _fsync_tree(tmp)              # files other libraries wrote (checkpoints, shards) are durable first
        if os.path.exists(out_dir):
            old = f"{out_dir}.old-{os.getpid()}"
            os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out_dir)
        _fsync_dir(os.path.dirname(out_dir))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def plain(obj):
    """A config (MindFormerConfig / dict / list, nested) as plain dicts and lists, for JSON and
    comparisons (here because `atomic_json` writers and config checks at every level need it)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj
