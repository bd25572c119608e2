"""The skip-step decision is global: when one rank's gradient norm is not finite, every rank
skips (AnyRankFlag all-reduces the flag, as MindSpore's loss-scale cell does); when none is, no
rank does. Run with 2 msrun workers on CPU in data-parallel mode, where the AllReduce is real.
(CI covers the same AllReduce inside the wrapper through tests/distributed/test_data_parallel.py.)"""
import os
import re
import subprocess

import pytest

from ._util import LAUNCHER, REPO, free_port

WORKER = os.path.join("tests", "distributed", "_flag_worker.py")


@pytest.mark.slow          # ~1-2 min on 2 shared cores (two workers import MindFormers)
def test_one_rank_non_finite_makes_every_rank_skip(tmp_path):
    log_dir = str(tmp_path / "log")
    env = dict(os.environ, GLOG_v="2", PYTHONUNBUFFERED="1", PYTHONPATH=REPO)
    proc = subprocess.run(["bash", LAUNCHER, WORKER, "2", "2", "127.0.0.1", str(free_port()), "0", log_dir,
                           "True", "120"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        with open(os.path.join(log_dir, f"worker_{rank}.log"), encoding="utf-8") as f:
            got = {m.group(1): (float(m.group(2)), m.group(3) == "True")
                   for m in re.finditer(r"case (\S+) rank \d local_norm (\S+) skip (True|False)", f.read())}
        assert got["all-finite"] == (5.0 * (rank + 1), False), (rank, got)
        assert got["rank1-inf"][1] is True, (rank, got)          # rank 0's own norm is finite
        if rank == 0:
            assert got["rank1-inf"][0] == 5.0
