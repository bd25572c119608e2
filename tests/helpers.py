"""Helpers shared by end-to-end tests: small MindRecord data and runner invocations."""
import json
import os
import subprocess
import sys

from bitcpm_ms.testing import write_learnable_mindrecord  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "run", "run_bitcpm.py")
TINY_YAML = os.path.join(ROOT, "yaml_configs", "bitcpm_tiny_cpu.yaml")

# a model small enough for a few-second CI run of the tiny YAML
SMALL_MODEL = ["--model.model_config.hidden_size", "64", "--model.model_config.num_layers", "2",
               "--model.model_config.seq_length", "64", "--model.model_config.vocab_size", "512",
               "--model.model_config.intermediate_size", "128", "--model.model_config.dim_model_base", "16",
               "--callbacks.BitCPMMetricsMonitor.log_interval", "5"]


# the tiny YAML masks packed documents; data written without the actual_seq_len column trains without
NO_DOCUMENTS = ["--model.model_config.use_eod_attn_mask_compression", "false"]


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
