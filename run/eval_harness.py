#!/usr/bin/env python3
"""Evaluate a bitcpm-ms checkpoint with EleutherAI's lm-evaluation-harness (same as `bitcpm-eval`).

    python3 run/eval_harness.py --model bitcpm \
        --model_args config=RUN/config_resolved.json,checkpoint=RUN[,packed=true,batch_size=16,max_length=256] \
        --tasks bitcpm_gcide_define [--num_fewshot N] [--limit N] [--include_path DIR] \
        [--output_path OUT] [--batch_size N] [--log_samples]

The flags are lm-eval's own; our tasks (the miniature GCIDE task, the report's `bitcpm_report` group)
are on the include path. See docs/eval.md.
"""
import sys

from bitcpm_ms.harness.cli import eval_main

if __name__ == "__main__":
    sys.exit(eval_main())
