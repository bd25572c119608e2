#!/usr/bin/env python3
"""Train, evaluate or sample a BitCPM model from a MindFormers-style YAML.

    python run/run_bitcpm.py --config yaml_configs/bitcpm_tiny_cpu.yaml \
        [--run_mode train|eval|predict] [--output_dir DIR] [--max_steps N] \
        [--load_checkpoint PATH] [--resume_training true] [--a.b.c value ...]

Dotted overrides edit the YAML (e.g. `--quant.enabled false`, `--quant.group_size 64`).
Everything is built through MindFormers (MindFormerConfig, build_context, Trainer) in GRAPH_MODE.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bitcpm_ms.config_loader import ConfigError, load_config, parse_overrides, split_argv  # noqa: E402

OWN_FLAGS = ("config", "run_mode", "output_dir", "max_steps", "load_checkpoint", "resume_training",
             "prompt", "max_new_tokens", "eval_max_batches")


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--run_mode", choices=("train", "eval", "predict"), default=None,
                   help="default: the YAML's run_mode")
    p.add_argument("--output_dir", default=None, help="checkpoints, metrics.jsonl, eval.json (default: YAML)")
    p.add_argument("--max_steps", type=int, default=None, help="stop training after N optimizer steps")
    p.add_argument("--load_checkpoint", default=None, help="checkpoint file or directory to start from")
    p.add_argument("--resume_training", default=None, help="true: also restore optimizer state and step")
    p.add_argument("--prompt", default="The", help="predict mode: text to continue")
    p.add_argument("--max_new_tokens", type=int, default=32, help="predict mode: tokens to generate")
    p.add_argument("--eval_max_batches", type=int, default=None, help="eval mode: limit batches")
    return p


def parse_args(argv):
    own, rest = split_argv(argv, OWN_FLAGS)
    args = build_parser().parse_args(own)
    overrides = parse_overrides(rest)
    if args.output_dir is not None:
        overrides["output_dir"] = args.output_dir
    if args.run_mode is not None:
        overrides["run_mode"] = args.run_mode
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ConfigError(f"--max_steps must be >= 1, got {args.max_steps}")
        overrides["runner_config.stop_step"] = args.max_steps
    if args.load_checkpoint is not None:
        overrides["load_checkpoint"] = args.load_checkpoint
    if args.resume_training is not None:
        overrides["resume_training"] = str(args.resume_training).lower() in ("1", "true", "yes")
    return args, overrides


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        args, overrides = parse_args(argv)
        config = load_config(args.config, overrides)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from bitcpm_ms.runner import run  # heavy imports only after the arguments are known good
    from bitcpm_ms.data.errors import DataError
    try:
        return run(config, args)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
