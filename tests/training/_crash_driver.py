"""Runs the crash-safety scenarios of test_crash_safety.py in one process (one import of MindSpore
and MindFormers instead of four): `python _crash_driver.py ROOT` writes ROOT/results.json.

Each run calls the `bitcpm-train` entry point (`cli.train_main`) with its stdout and stderr
captured; the SIGTERM is sent to this process by a watcher thread once the first run has logged
step 2, and is handled exactly as in a separate process (the handler runs in the main thread)."""
import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from bitcpm_ms.app.cli import train_main
from bitcpm_ms.testing import SMALL_MODEL, make_mindrecord, write_config

EXTRA = 3          # steps the resumed run adds after the preempted one's last step


def records(out):
    try:
        with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return []


def run(cfg, out, *args):
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se):
        rc = train_main(["--config", cfg, "--output_dir", out, *map(str, args)])
    return {"rc": rc, "stdout": so.getvalue(), "stderr": se.getvalue()}


def sigterm_after_step(out, step):
    def watch():
        deadline = time.time() + 600
        while time.time() < deadline:
            if any(r.get("step", 0) >= step for r in records(out)):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.02)
    threading.Thread(target=watch, daemon=True).start()


def damage(path, how):
    os.chmod(path, 0o600)
    if how == "truncate":
        os.truncate(path, os.path.getsize(path) // 2)
    else:
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            f.write(os.urandom(4096))


def nan_weights(src, dst):
    """A copy of checkpoint `src` whose final norm weight is NaN (loss and gradients become NaN)."""
    import mindspore as ms
    import numpy as np
    params = ms.load_checkpoint(src)
    name = "model.norm_out.weight"
    params[name] = ms.Parameter(ms.Tensor(np.full(params[name].shape, np.nan, np.float32)), name=name)
    ms.save_checkpoint([{"name": n, "data": p} for n, p in params.items()], dst)
    return dst


def main(root):
    data = make_mindrecord(os.path.join(root, "data", "train.mindrecord"), 1600, SMALL_MODEL["seq_length"],
                           SMALL_MODEL["vocab_size"])
    cfg = write_config(os.path.join(root, "cfg.yaml"), data, os.path.join(root, "unused"), 4, total_steps=400)
    a, r = os.path.join(root, "a"), os.path.join(root, "r")
    res = {}
    # A: a stale lock of a killed run is in the way; SIGTERM arrives after step >= 2
    os.makedirs(a)
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    with open(os.path.join(a, ".lock"), "w") as f:
        json.dump({"pid": dead, "host": socket.gethostname(), "state": "running", "started": time.time() - 60}, f)
    sigterm_after_step(a, 2)
    res["a"] = run(cfg, a, "--max_steps", 400, "--callbacks.BitCPMCheckpointMonitor.save_checkpoint_steps", 1000)
    stopped = [x for x in records(a) if x.get("event") == "preempted"]
    k = stopped[0]["after_step"] if stopped else None
    res["k"] = k
    if k is None:
        return res
    last = res["last"] = k + EXTRA
    res["a_resume"] = run(cfg, a, "--max_steps", last, "--resume_training", "true")
    # R: the same steps uninterrupted, a checkpoint every step, the newest 3 kept
    res["r"] = run(cfg, r, "--max_steps", last, "--callbacks.BitCPMCheckpointMonitor.keep_checkpoint_max", 3)
    ckpt = os.path.join(r, "checkpoint", "rank_0")
    res["r_names"] = sorted(n for n in os.listdir(ckpt) if n.endswith(".ckpt"))
    os.rename(os.path.join(r, "metrics.jsonl"), os.path.join(root, "r_metrics.jsonl"))
    shutil.copyfile(os.path.join(ckpt, f"dp_rank_0-1_{last}.ckpt"), os.path.join(root, "r_final.ckpt"))
    # C: R's newest checkpoint cut to half, the one before with 4 KiB of noise; resume R
    with open(os.path.join(root, "r_metrics.jsonl")) as src, open(os.path.join(r, "metrics.jsonl"), "w") as dst:
        dst.write(src.read())
    damage(os.path.join(ckpt, f"dp_rank_0-1_{last}.ckpt"), "truncate")
    damage(os.path.join(ckpt, f"dp_rank_0-1_{last - 1}.ckpt"), "flip")
    res["c"] = run(cfg, r, "--max_steps", last, "--resume_training", "true")
    # S: every step non-finite (initialised from R's weights with one weight set to NaN: the loss and
    # every gradient are NaN) and skipped; then resumed
    s = os.path.join(root, "s")
    nan_ckpt = nan_weights(os.path.join(root, "r_final.ckpt"), os.path.join(root, "nan.ckpt"))
    res["s"] = run(cfg, s, "--max_steps", 3, "--init_from_checkpoint", nan_ckpt)
    res["s_resume"] = run(cfg, s, "--max_steps", 5, "--init_from_checkpoint", nan_ckpt, "--resume_training", "true")
    return res


if __name__ == "__main__":
    out = main(sys.argv[1])
    with open(os.path.join(sys.argv[1], "results.json"), "w") as f:
        json.dump(out, f)
