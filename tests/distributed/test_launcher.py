"""run/msrun_launcher.sh: argument forms, success, and failing fast when one worker dies.

Without the launcher's watchdog, a rank that dies before the cluster is built leaves msrun
waiting for the scheduler until CLUSTER_TIME_OUT (here 600 s; 7200 s by default).
"""
import os
import subprocess
import time

import pytest

from ._util import LAUNCHER, REPO, free_port

WORKER = os.path.join("tests", "distributed", "_worker.py")


def launch(tmp_path, env_extra, cluster_time_out=600, timeout=240):
    log_dir = str(tmp_path / "log")
    env = dict(os.environ, GLOG_v="2", PYTHONUNBUFFERED="1", **env_extra)
    t0 = time.time()
    proc = subprocess.run(["bash", LAUNCHER, WORKER, "2", "2", "127.0.0.1", str(free_port()), "0", log_dir,
                           "True", str(cluster_time_out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.time() - t0, log_dir


@pytest.mark.parametrize("args", [[], ["a.py", "2", "3"], ["a.py"] + ["1"] * 9])
def test_wrong_argument_count_is_rejected(args):
    proc = subprocess.run(["bash", LAUNCHER, *args], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "expected 1, 2, 6 or 9 arguments" in proc.stderr


def test_bad_values_are_rejected(tmp_path):
    proc = subprocess.run(["bash", LAUNCHER, WORKER, "2", "4", "127.0.0.1", "8118", "0", str(tmp_path), "True",
                           "60"], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "LOCAL_WORKER" in proc.stderr
    proc = subprocess.run(["bash", LAUNCHER, "no_such_script.py", "2"], cwd=REPO, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and "not found" in proc.stderr


@pytest.mark.slow          # ~25 s; the data-parallel tests also launch through the script
def test_success_two_workers_with_per_rank_logs(tmp_path):
    proc, _, log_dir = launch(tmp_path, {"FAIL_RANK": "-1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for rank in (0, 1):
        with open(os.path.join(log_dir, f"worker_{rank}.log"), encoding="utf-8") as f:
            assert f"rank {rank} all-reduce result 3.0" in f.read()
    assert os.path.isfile(os.path.join(log_dir, "scheduler.log"))
    assert "all workers finished" in proc.stdout


@pytest.mark.parametrize("when", ["before_init", pytest.param("after_init", marks=pytest.mark.slow)])
def test_dead_worker_fails_the_job_fast_and_is_named(tmp_path, when):
    proc, elapsed, log_dir = launch(tmp_path, {"FAIL_RANK": "1", "FAIL_WHEN": when})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert elapsed < 120, f"launcher took {elapsed:.0f}s to report a dead worker (cluster_time_out 600 s)"
    assert "worker rank 1 " in proc.stderr and "exited with code 3" in proc.stderr
    assert f"rank 1 failing on purpose ({when})" in proc.stderr     # the tail of its log is shown
    # nothing of this launch is left running
    out = subprocess.run(["pgrep", "-f", log_dir], capture_output=True, text=True).stdout.split()
    assert not out, f"processes still running: {out}"
