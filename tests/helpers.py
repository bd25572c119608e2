"""Helpers shared by end-to-end tests: small MindRecord data and runner invocations."""
import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "run", "run_bitcpm.py")
TINY_YAML = os.path.join(ROOT, "yaml_configs", "bitcpm_tiny_cpu.yaml")

# a model small enough for a few-second CI run of the tiny YAML
SMALL_MODEL = ["--model.model_config.hidden_size", "64", "--model.model_config.num_layers", "2",
               "--model.model_config.seq_length", "64", "--model.model_config.vocab_size", "512",
               "--model.model_config.intermediate_size", "128", "--model.model_config.dim_model_base", "16",
               "--callbacks.BitCPMMetricsMonitor.log_interval", "5"]


def write_learnable_mindrecord(path, n_samples, seq_length, vocab, seed=0):
    """Samples of seq_length+1 ids following `next = (prev + 3) % vocab` from a random start:
    a pattern a tiny model learns within a few dozen steps."""
    from mindspore.mindrecord import FileWriter
    rng = np.random.default_rng(seed)
    writer = FileWriter(path, shard_num=1, overwrite=True)
    writer.add_schema({"input_ids": {"type": "int32", "shape": [-1]}}, "learnable")
    rows = [{"input_ids": ((int(rng.integers(0, vocab)) + 3 * np.arange(seq_length + 1)) % vocab).astype(np.int32)}
            for _ in range(n_samples)]
    writer.write_raw_data(rows)
    writer.commit()
    return path


def run_cli(args, cwd=None, timeout=600):
    """Run run/run_bitcpm.py in a fresh process; returns CompletedProcess (text)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_v="3")
    return subprocess.run([sys.executable, RUNNER, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd or ROOT, env=env)


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def step_records(records):
    return {r["step"]: r for r in records if "step" in r}
