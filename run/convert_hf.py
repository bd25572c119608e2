#!/usr/bin/env python3
"""Convert checkpoints between Hugging Face MiniCPM format and bitcpm-ms (same as `bitcpm-convert-hf`).

  # HF -> MindSpore .ckpt (to start QAT from a full-precision MiniCPM, as BitCPM-CANN does)
  python run/convert_hf.py from_hf --hf_dir DIR --output model.ckpt

  # MindSpore (trained QAT checkpoint) -> HF directory (config.json + model.safetensors)
  python run/convert_hf.py to_hf --config YAML --checkpoint CKPT_OR_DIR --output DIR \
      [--flavour latent|pseudo_quantized] [--dtype float32|float16]
"""
import sys

from bitcpm_ms.app.cli import convert_hf_main

if __name__ == "__main__":
    sys.exit(convert_hf_main())
