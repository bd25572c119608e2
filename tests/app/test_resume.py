"""Choosing the checkpoint a run starts from: newest good one, bad ones named and moved aside,
explicit files verified, other architectures refused; one run per output directory."""
import json
import os
import subprocess
import sys
import time

import mindspore as ms
import numpy as np
import pytest

from bitcpm_ms.app.config import load_config
from bitcpm_ms.app.resume import check_same_model, choose_start, run_info
from bitcpm_ms.app.runlock import RunLock
from bitcpm_ms.errors import CheckpointError, ConfigError
from bitcpm_ms.training.checkpoint_files import publish_checkpoint, read_sidecar

from ..helpers import ROOT, TINY_YAML


def _publish(rank_dir, step, extra=None):
    def save(path):
        ms.save_checkpoint([{"name": "w", "data": ms.Tensor(np.full((32, 32), step, np.float32))}], path)
    return publish_checkpoint(save, str(rank_dir), f"run_rank_0-1_{step}.ckpt", dict(extra or {}, step=step))


def _truncate(path):
    os.truncate(path, os.path.getsize(path) // 2)


def _flip(path):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 3)
        f.write(os.urandom(256))


def test_newest_good_checkpoint_is_chosen_and_bad_ones_named(tmp_path):
    rank_dir = tmp_path / "checkpoint" / "rank_0"
    paths = {s: _publish(rank_dir, s) for s in (1, 2, 3, 4)}
    _truncate(paths[4])
    _flip(paths[3])
    start = choose_start(str(tmp_path / "checkpoint"), may_quarantine=True)
    assert start.path == paths[2] and start.step == 2
    problems = dict(start.rejected)
    assert "is truncated" in problems[paths[4]] and "is corrupt: sha256" in problems[paths[3]]
    assert os.path.exists(paths[4] + ".corrupt") and not os.path.exists(paths[4])     # moved, not deleted
    assert choose_start(str(tmp_path)).path == paths[2]         # an output dir works as well


def test_outside_the_run_bad_files_are_left_in_place(tmp_path):
    paths = {s: _publish(tmp_path / "rank_0", s) for s in (1, 2)}
    _truncate(paths[2])
    start = choose_start(str(tmp_path), may_quarantine=False)
    assert start.path == paths[1] and os.path.exists(paths[2])


def test_no_good_checkpoint_is_an_error_listing_each_problem(tmp_path):
    p = _publish(tmp_path / "rank_0", 1)
    os.truncate(p, 0)
    with pytest.raises(CheckpointError, match=r"no good checkpoint .*run_rank_0-1_1.ckpt is empty"):
        choose_start(str(tmp_path))


def test_explicit_files_are_verified_and_never_replaced(tmp_path):
    paths = {s: _publish(tmp_path, s) for s in (1, 2)}
    _flip(paths[2])
    with pytest.raises(CheckpointError, match="is corrupt"):
        choose_start(paths[2])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="is not a .ckpt file"):
        choose_start(str(text))
    fake = tmp_path / "fake.ckpt"
    fake.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*fake.ckpt"):
        choose_start(str(fake))
    with pytest.raises(CheckpointError, match="does not exist"):
        choose_start(str(tmp_path / "nothing.ckpt"))


def test_a_checkpoint_of_another_architecture_is_refused(tmp_path):
    cfg = load_config(TINY_YAML, {"model.model_config.hidden_size": 128, "quant.group_size": 32})
    p = _publish(tmp_path, 5, run_info(cfg))
    check_same_model(p, cfg, read_sidecar(p))            # same config: fine
    other = load_config(TINY_YAML, {"model.model_config.hidden_size": 256})
    with pytest.raises(CheckpointError, match=r"another architecture: hidden_size 128 \(this config: 256\)"):
        check_same_model(p, other, read_sidecar(p))
    with pytest.raises(CheckpointError, match="another architecture|has no model.tok_embeddings"):
        check_same_model(p, other, None)                 # no sidecar: checked by shapes


HOLD = """
import sys, time
from bitcpm_ms.app.runlock import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def test_a_second_run_is_refused_naming_the_first(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=rf"in use by another training run: pid {holder.pid} on host "):
            RunLock(str(tmp_path)).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(str(tmp_path)) as lock:         # the holder was killed: its lock is taken over
        assert lock.took_over["pid"] == holder.pid
    info = json.load(open(tmp_path / ".lock"))
    assert info["state"] == "finished" and info["pid"] == os.getpid()
    with RunLock(str(tmp_path)) as lock:         # a cleanly released lock is not "taken over"
        assert lock.took_over is None


def test_lock_without_posix_locks_falls_back_to_the_recorded_pid(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*a):
        raise OSError(errno.ENOLCK, "No locks available")
    (tmp_path / ".lock").write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename,
                                                "state": "running", "started": time.time()}))
    monkeypatch.setattr(fcntl, "lockf", no_locks)
    with pytest.raises(ConfigError, match="has no locks"):
        RunLock(str(tmp_path)).acquire()
    (tmp_path / ".lock").write_text(json.dumps({"pid": 2 ** 22 + 17, "host": os.uname().nodename,
                                                "state": "running"}))
    with RunLock(str(tmp_path)) as lock:
        assert lock.took_over["pid"] == 2 ** 22 + 17
