"""Checkpoint files: published complete or not at all, verified against their sidecar, pruned safely."""
import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from bitcpm_ms.training.checkpoint_files import (list_checkpoints, prune_checkpoints, publish_checkpoint,
                                                 quarantine, read_sidecar, remove_dead_writes, sidecar_path,
                                                 verify_checkpoint)


def _saver(value):
    def save(path):
        ms.save_checkpoint([{"name": "w", "data": ms.Tensor(np.full((64, 64), value, np.float32))}], path)
    return save


def _publish(d, step, value=None):
    return publish_checkpoint(_saver(step if value is None else value), str(d), f"run_rank_0-1_{step}.ckpt",
                              {"step": step, "skipped_steps": 0})


def test_publish_writes_file_and_sidecar(tmp_path):
    path = _publish(tmp_path, 3)
    info = read_sidecar(path)
    assert info["step"] == 3 and info["bytes"] == os.path.getsize(path) and len(info["sha256"]) == 64
    assert info["file"] == os.path.basename(path) and info["format"] == 1
    assert verify_checkpoint(path) is None
    assert float(ms.load_checkpoint(path)["w"].asnumpy()[0, 0]) == 3.0
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(path), os.path.basename(sidecar_path(path))])


@pytest.mark.parametrize("damage, phrase", [
    ("truncate", "is truncated"), ("empty", "is empty (0 bytes"), ("flip", "is corrupt: sha256"),
    ("grow", "its sidecar records"), ("no_sidecar", "has no sidecar"), ("bad_sidecar", "unreadable sidecar"),
    ("missing", "is missing")])
def test_verify_names_what_is_wrong(tmp_path, damage, phrase):
    path = _publish(tmp_path, 1)
    size = os.path.getsize(path)
    os.chmod(path, 0o600)
    if damage == "truncate":
        os.truncate(path, size // 2)
    elif damage == "empty":
        os.truncate(path, 0)
    elif damage == "flip":
        with open(path, "r+b") as f:
            f.seek(size // 2)
            block = f.read(64)
            f.seek(size // 2)
            f.write(bytes(b ^ 0xFF for b in block))
    elif damage == "grow":
        with open(path, "ab") as f:
            f.write(b"x")
    elif damage == "no_sidecar":
        os.remove(sidecar_path(path))
    elif damage == "bad_sidecar":
        with open(sidecar_path(path), "w") as f:
            f.write("{not json")
    elif damage == "missing":
        os.remove(path)
    assert phrase in verify_checkpoint(path)


def test_a_failing_save_publishes_nothing_and_keeps_the_previous(tmp_path):
    good = _publish(tmp_path, 1)

    def crash(path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        publish_checkpoint(crash, str(tmp_path), "run_rank_0-1_2.ckpt", {"step": 2})
    assert [e.step for e in list_checkpoints(str(tmp_path))] == [1]
    assert verify_checkpoint(good) is None
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")]


def test_leftovers_of_a_killed_writer_are_removed(tmp_path):
    _publish(tmp_path, 1)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    os.makedirs(tmp_path / f".tmp-{dead}")
    (tmp_path / f".tmp-{dead}" / "run_rank_0-1_2.ckpt").write_bytes(b"half")
    os.makedirs(tmp_path / f".tmp-{os.getppid()}")          # a live writer's directory stays
    (tmp_path / "run_rank_0-1_2.ckpt.json").write_text(json.dumps({"step": 2, "bytes": 1, "sha256": "0"}))
    removed = remove_dead_writes(str(tmp_path))
    assert sorted(removed) == sorted([f".tmp-{dead}", "run_rank_0-1_2.ckpt.json"])
    assert os.path.isdir(tmp_path / f".tmp-{os.getppid()}")
    assert [e.step for e in list_checkpoints(str(tmp_path))] == [1]


def test_prune_keeps_the_newest_and_never_the_protected_or_foreign_files(tmp_path):
    paths = [_publish(tmp_path, s) for s in (1, 2, 3, 4)]
    foreign = tmp_path / "other-1_1.ckpt"
    _saver(9)(str(foreign))
    removed = prune_checkpoints(str(tmp_path), keep=2, protect=paths[-1])
    assert removed == paths[:2]
    assert [e.step for e in list_checkpoints(str(tmp_path)) if e.sidecar] == [3, 4]
    assert foreign.exists() and not os.path.exists(sidecar_path(paths[0]))
    assert prune_checkpoints(str(tmp_path), keep=1, protect=paths[2]) == []   # protected, though not the newest
    assert prune_checkpoints(str(tmp_path), keep=1, protect=paths[3]) == [paths[2]]


def test_list_orders_by_step_not_by_name_or_time(tmp_path):
    for s in (10, 9, 100):
        _publish(tmp_path, s)
    assert [e.step for e in list_checkpoints(str(tmp_path))] == [9, 10, 100]


def test_quarantine_moves_file_and_sidecar(tmp_path):
    path = _publish(tmp_path, 1)
    dest = quarantine(path)
    assert dest.endswith(".ckpt.corrupt") and os.path.exists(dest) and os.path.exists(dest + ".json")
    assert list_checkpoints(str(tmp_path)) == []
