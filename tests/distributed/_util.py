"""Helpers for the distributed tests: tiny MindRecord data, a small training YAML, launching runs.

Everything runs the real entry points (run/run_bitcpm.py, run/msrun_launcher.sh) as subprocesses,
so what is tested is what a user runs.
"""
import glob
import os
import socket
import subprocess
import sys

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY_YAML = os.path.join(REPO, "yaml_configs", "bitcpm_tiny_cpu.yaml")
LAUNCHER = os.path.join(REPO, "run", "msrun_launcher.sh")
RUNNER = os.path.join("run", "run_bitcpm.py")

# A very small model so that a 2-worker launch (compile included) takes seconds.
SMALL_MODEL = dict(hidden_size=64, num_layers=1, num_heads=2, n_kv_heads=1, intermediate_size=128,
                   dim_model_base=32, vocab_size=512, seq_length=32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_mindrecord(path: str, num_rows: int, seq_length: int, vocab_size: int, seed: int = 0) -> str:
    """num_rows packed samples of seq_length + 1 tokens in [3, vocab) (no pad id 0, so every token
    counts in the loss); token 0 of row i is a row id, 3 + i % (vocab - 3)."""
    from mindspore.mindrecord import FileWriter
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    writer = FileWriter(path, shard_num=1, overwrite=True)
    writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]}}, "packed")
    rows = [{"input_ids": np.concatenate([[3 + i % (vocab_size - 3)],
                                          rng.integers(3, vocab_size, seq_length)]).astype(np.int32)}
            for i in range(num_rows)]
    writer.write_raw_data(rows)
    writer.commit()
    return os.path.dirname(path)


def write_config(path: str, data_dir: str, output_dir: str, batch_size: int, data_parallel: int = 1,
                 model: dict = None, total_steps: int = 20, group_size: int = 32) -> str:
    """The tiny CPU YAML, shrunk, deterministic (no shuffle), checkpoint + metrics every step."""
    with open(TINY_YAML, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)          # anchors resolved
    cfg["output_dir"] = output_dir
    cfg["eval_after_train"] = False
    cfg.pop("data", None)                # data is given directly (dataset_dir), nothing to prepare
    cfg["use_parallel"] = data_parallel > 1
    cfg["quant"]["group_size"] = group_size
    mc = cfg["model"]["model_config"]
    mc.update(model or SMALL_MODEL)
    mc["batch_size"] = batch_size
    mc["qat_config"] = dict(cfg["quant"])
    cfg["runner_config"]["batch_size"] = batch_size
    cfg["train_dataset"]["batch_size"] = batch_size
    cfg["train_dataset"]["data_loader"]["dataset_dir"] = data_dir
    cfg["train_dataset"]["data_loader"]["shuffle"] = False
    cfg["train_dataset_task"]["dataset_config"] = cfg["train_dataset"]
    cfg["eval_dataset_task"]["dataset_config"] = cfg["eval_dataset"]
    # a fixed schedule length, identical for every world size; warmup >= 1 step (MindFormers'
    # WarmUpStableDecayLR returns NaN at step 0 when warmup_steps rounds to 0)
    cfg["lr_schedule"].update(total_steps=total_steps, warmup_ratio=0.1)
    cfg["parallel"]["parallel_mode"] = 0
    cfg["parallel"]["gradients_mean"] = True
    cfg["parallel_config"]["data_parallel"] = data_parallel
    for cb in cfg["callbacks"]:
        if cb["type"] == "BitCPMMetricsMonitor":
            cb["log_interval"] = 1
        if cb["type"] == "CheckpointMonitor":
            cb.update(prefix="dp", save_checkpoint_steps=1, keep_checkpoint_max=20)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path


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
