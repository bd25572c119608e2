#!/usr/bin/env python3
"""Prepare a packed MindRecord dataset (same as `bitcpm-prepare`).

    python run/prepare_data.py --config yaml_configs/bitcpm_tiny_cpu.yaml
    python run/prepare_data.py --input 'corpus/*.jsonl.gz' --text_field content \
        --vocab_size 4096 --seq_length 512 --output_dir data_cache/mycorpus

Defaults come from the YAML's top-level ``data:`` section (see docs/data.md) and
``model.model_config.seq_length``; command-line flags override them. Re-running with the same
inputs and settings is a no-op; an output directory holding a different dataset is an error
unless --overwrite. Prints the manifest summary; exit status 2 on bad input.
"""
import sys

from bitcpm_ms.app.cli import prepare_main

if __name__ == "__main__":
    sys.exit(prepare_main())
