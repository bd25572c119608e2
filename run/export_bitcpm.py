#!/usr/bin/env python3
"""Export a trained ternary QAT checkpoint for inference: packed 2-bit weights + MindIR
(same as `bitcpm-export`).

    python run/export_bitcpm.py --config yaml_configs/bitcpm_tiny_cpu.yaml \
        --checkpoint output/bitcpm_tiny_cpu --output_dir output/bitcpm_tiny_export [--batch_size 1]

Writes model_packed.ckpt, model.mindir and export.json (sizes, and the max logit difference of
the packed model and of the reloaded MindIR against the fake-quant model). The MindIR records the
absolute path of the compiled kernel library (BITCPM_MS_CACHE): keep it where it was built.
"""
import sys

from bitcpm_ms.app.cli import export_main

if __name__ == "__main__":
    sys.exit(export_main())
