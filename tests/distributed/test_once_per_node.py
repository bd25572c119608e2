"""One rank per node runs a check (hashing) and every rank gets the same verdict.

The protocol is tested here with ranks as threads and an in-memory AllGather (any number of ranks
and nodes, exceptions, many rounds); `test_once_per_node_msrun` runs it under msrun with
MindSpore's real collectives, including a leader that works longer than the 30 s a CPU collective
waits."""
import os
import subprocess
import threading
import time

import numpy as np
import pytest

from bitcpm_ms.errors import DataError
from bitcpm_ms.parallel import once_per_node as opn

from ._util import LAUNCHER, REPO, free_port


class FakeJob:
    """`n` ranks as threads; rank r lives on node `nodes[r]`; gather_ints is a real all-gather."""

    def __init__(self, nodes):
        self.n = len(nodes)
        self.nodes = nodes
        self.barrier = threading.Barrier(self.n, timeout=20)
        self.slots = [None] * self.n
        self.calls = [0] * self.n
        self.local = threading.local()

    def world(self):
        return self.local.rank, self.n

    def gather_ints(self, values):
        r = self.local.rank
        self.calls[r] += 1
        self.slots[r] = list(values)
        self.barrier.wait()
        out = np.array(self.slots, dtype=np.int64)
        self.barrier.wait()
        return out

    def run(self, monkeypatch, fn):
        monkeypatch.setattr(opn, "world", self.world)
        monkeypatch.setattr(opn, "gather_ints", self.gather_ints)
        monkeypatch.setattr(opn, "node_key", lambda: (self.nodes[self.local.rank], 7))
        results, errors = [None] * self.n, [None] * self.n

        def body(rank):
            self.local.rank = rank
            try:
                results[rank] = fn(rank)
            except Exception as err:        # noqa: BLE001
                errors[rank] = err

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return results, errors


def test_node_leaders_are_the_lowest_rank_of_each_node():
    keys = np.array([[5, 1], [9, 1], [5, 1], [9, 1], [3, 3]])
    assert opn.node_leaders(keys) == [0, 1, 0, 1, 4]


def test_only_node_leaders_check_and_every_rank_gets_none(monkeypatch):
    job = FakeJob(nodes=[1, 1, 2, 2])
    checked = []
    results, errors = job.run(monkeypatch, lambda r: opn.verdict_once_per_node(lambda tick: checked.append(r)))
    assert errors == [None] * 4
    assert results == [None] * 4
    assert sorted(checked) == [0, 2]
    assert len(set(job.calls)) == 1            # every rank made the same number of collective calls


def test_a_problem_found_on_one_node_stops_every_rank(monkeypatch):
    job = FakeJob(nodes=[1, 1, 2, 2])

    def check(rank):
        return opn.verdict_once_per_node(lambda tick: "is corrupt: sha256 abc" if rank == 2 else None)

    results, errors = job.run(monkeypatch, check)
    assert errors == [None] * 4
    assert results[2] == results[3] == "is corrupt: sha256 abc"
    assert results[0] == results[1] == "is corrupt: sha256 abc (found by rank 2 on another node)"


def test_a_leader_working_for_many_rounds_keeps_the_others_in_step(monkeypatch):
    job = FakeJob(nodes=[1, 1, 1])

    def work(tick):
        for _ in range(40):
            time.sleep(0.005)
            tick()
        return None

    results, errors = job.run(monkeypatch, lambda r: opn.verdict_once_per_node(work, round_seconds=0.02))
    assert errors == [None] * 3 and results == [None] * 3
    assert job.calls[0] >= 5                     # node keys, several rounds, the final state
    assert len(set(job.calls)) == 1


def test_errors_of_the_leader_reach_every_rank(monkeypatch):
    job = FakeJob(nodes=[1, 1])

    def raise_data_error(tick):
        raise DataError("train shard /d/train.mindrecord is corrupt or was modified")

    results, errors = job.run(monkeypatch, lambda r: opn.verdict_once_per_node(raise_data_error))
    assert errors == [None, None]                # a BitCPMError is the verdict, on every rank
    assert results == ["train shard /d/train.mindrecord is corrupt or was modified"] * 2

    def raise_os_error(tick):
        raise PermissionError("[Errno 13] Permission denied: '/d/model.ckpt'")

    results, errors = job.run(monkeypatch, lambda r: opn.verdict_once_per_node(raise_os_error))
    assert isinstance(errors[0], PermissionError)      # the leader keeps its own traceback
    assert errors[1] is None and "Permission denied" in results[1]


def test_one_process_checks_by_itself(monkeypatch):
    monkeypatch.setattr(opn, "world", lambda: (0, 1))
    monkeypatch.setattr(opn, "gather_ints", lambda v: pytest.fail("no communication in one process"))
    assert opn.verdict_once_per_node(lambda tick: (tick(), "bad")[1]) == "bad"
    with pytest.raises(DataError, match="corrupt"):
        opn.verdict_once_per_node(lambda tick: (_ for _ in ()).throw(DataError("corrupt")))


def test_long_messages_are_cut_not_lost():
    text = "é" * 3000
    assert opn._decode(opn._encode(text)) == "é" * (opn.MAX_MESSAGE_BYTES // 2)


WORKER = os.path.join("tests", "distributed", "_once_per_node_worker.py")


def _msrun(tmp_path, mode, timeout):
    log_dir = str(tmp_path / "log")
    env = dict(os.environ, GLOG_v="2", PYTHONUNBUFFERED="1", PYTHONPATH=REPO, ONCE_MODE=mode,
               ONCE_DIR=str(tmp_path))
    proc = subprocess.run(["bash", LAUNCHER, WORKER, "2", "2", "127.0.0.1", str(free_port()), "0", log_dir,
                           "True", "120"], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    logs = []
    for rank in (0, 1):
        with open(os.path.join(log_dir, f"worker_{rank}.log"), encoding="utf-8") as f:
            logs.append(f.read())
    return proc, logs


def test_once_per_node_msrun(tmp_path):
    """2 msrun workers on one node: rank 0 hashes (in rounds of 0.05 s), rank 1 does not; both get
    the good verdict, then both get the same problem for a corrupted file."""
    proc, logs = _msrun(tmp_path, "short", 300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs[1][-2000:]
    for rank, log in enumerate(logs):
        assert f"rank {rank} good: None hashed {1 - rank}" in log, log[-2000:]
        assert f"rank {rank} bad: is corrupt: sha256" in log, log[-2000:]


@pytest.mark.slow          # ~1.5 min: the leader works 40 s
def test_a_leader_working_longer_than_a_collective_waits_msrun(tmp_path):
    proc, logs = _msrun(tmp_path, "long", 400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs[1][-2000:]
    for rank, log in enumerate(logs):
        assert f"rank {rank} long: None" in log, log[-2000:]
