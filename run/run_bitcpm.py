#!/usr/bin/env python3
"""Train, evaluate or sample a BitCPM model from a MindFormers-style YAML (same as `bitcpm-train`).

    python run/run_bitcpm.py --config yaml_configs/bitcpm_tiny_cpu.yaml \
        [--run_mode train|eval|predict] [--output_dir DIR] [--max_steps N] \
        [--load_checkpoint PATH] [--resume_training true] [--verbose] [--a.b.c value ...]

Dotted overrides edit the YAML (e.g. `--quant.enabled false`, `--quant.group_size 64`).
Everything is built through MindFormers (MindFormerConfig, build_context, Trainer) in GRAPH_MODE.
"""
import sys

from bitcpm_ms.app.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main())
