"""Helpers for the distributed tests: tiny MindRecord data, a small training YAML, launching runs.

Everything runs the real entry points (run/run_bitcpm.py, run/msrun_launcher.sh) as subprocesses,
so what is tested is what a user runs.
"""
import glob
import os
import subprocess
import sys

import numpy as np

from bitcpm_ms.testing import (REPO, SMALL_MODEL, TINY_YAML, free_port, make_mindrecord,  # noqa: F401
                               write_config)

LAUNCHER = os.path.join(REPO, "run", "msrun_launcher.sh")
RUNNER = os.path.join("run", "run_bitcpm.py")

def _env(threads=None):
    env = dict(os.environ)
    env.setdefault("GLOG_v", "2")
    env["PYTHONUNBUFFERED"] = "1"
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_single(config: str, *args, timeout: int = 600, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, RUNNER, "--config", config, *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env or _env())


def run_msrun(config: str, workers: int, log_dir: str, *args, timeout: int = 600, env=None,
              cluster_time_out: int = 300) -> subprocess.CompletedProcess:
    order = " ".join([RUNNER, "--config", config, *map(str, args)])
    cmd = ["bash", LAUNCHER, order, str(workers), str(workers), "127.0.0.1", str(free_port()), "0",
           log_dir, "True", str(cluster_time_out)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env or _env())


def checkpoints(output_dir: str, rank: int = 0) -> dict:
    """{global step: path} of the CheckpointMonitor checkpoints of one rank. The step is read from
    the checkpoint (a resumed run names its files by the steps of that run, not the global ones)."""
    import mindspore as ms
    out = {}
    for p in glob.glob(os.path.join(output_dir, "checkpoint", f"rank_{rank}", "*.ckpt")):
        step = ms.load_checkpoint(p, choice_func=lambda name: name == "global_step")["global_step"]
        out[int(step.asnumpy().reshape(-1)[0])] = p
    return out


def load_arrays(path: str) -> dict:
    import mindspore as ms
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items()}


def model_and_optimizer(arrays: dict) -> dict:
    """Float tensors that define the training state: weights and Adam moments."""
    return {k: v for k, v in arrays.items()
            if v.dtype.kind == "f" and v.ndim >= 1 and
            (k.startswith(("model.", "lm_head.", "adam_m.", "adam_v.")))}


def max_abs_diff(a: dict, b: dict) -> float:
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))[:10]
    return max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)))) for k in a)


def tail(text: str, n: int = 60) -> str:
    return "\n".join(line for line in text.splitlines()[-n:])
