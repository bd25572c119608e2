#!/usr/bin/env python3
"""Prepare a packed MindRecord dataset (tokenizer + train/validation shards + manifest).

    python run/prepare_data.py --config yaml_configs/bitcpm_tiny_cpu.yaml
    python run/prepare_data.py --input 'corpus/*.jsonl.gz' --text_field content \
        --vocab_size 4096 --seq_length 512 --output_dir data_cache/mycorpus

Defaults come from the YAML's top-level ``data:`` section (see docs/data.md) and
``model.model_config.seq_length``; command-line flags override them. Re-running with the same
inputs and settings is a no-op; an output directory holding a different dataset is an error
unless --overwrite. Prints the manifest summary; exit status 2 on bad input.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bitcpm_ms.data.config import config_from_yaml  # noqa: E402
from bitcpm_ms.data.errors import DataError  # noqa: E402
from bitcpm_ms.data.packing import prepare_dataset  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="MindFormers-style YAML with a top-level data: section")
    ap.add_argument("--input", nargs="+", help='corpus files/dirs/globs, or "gcide" (default corpus)')
    ap.add_argument("--format", choices=["auto", "text", "jsonl", "parquet", "dictd"])
    ap.add_argument("--text_field", help="JSONL/Parquet field holding the text")
    ap.add_argument("--doc_separator", help=r'plain-text document separator; "\n\n" = blank lines, "" = one file one document')
    ap.add_argument("--cleaner", choices=["auto", "none", "gcide"])
    ap.add_argument("--output_dir")
    ap.add_argument("--vocab_size", type=int)
    ap.add_argument("--tokenizer_model", help="use this SentencePiece .model instead of training one")
    ap.add_argument("--tokenizer_type", choices=["bpe", "unigram"])
    ap.add_argument("--tokenizer_sample_bytes", type=int)
    ap.add_argument("--seq_length", type=int)
    ap.add_argument("--validation_fraction", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--shard_samples", type=int)
    ap.add_argument("--no_shuffle", action="store_true")
    ap.add_argument("--num_workers", type=int)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing different dataset")
    ap.add_argument("--no_progress", action="store_true")
    ap.add_argument("--print_manifest", action="store_true")
    args = ap.parse_args(argv)

    overrides = {k: v for k, v in vars(args).items()
                 if v is not None and k not in ("config", "overwrite", "no_progress", "print_manifest",
                                                "no_shuffle")}
    if args.doc_separator is not None:
        overrides["doc_separator"] = args.doc_separator.encode().decode("unicode_escape") or None
    if args.input is not None:
        overrides["input"] = args.input[0] if len(args.input) == 1 else args.input
    if args.no_shuffle:
        overrides["shuffle"] = False
    if args.no_progress:
        overrides["progress"] = False
    try:
        cfg = config_from_yaml(args.config, overrides)
        man = prepare_dataset(cfg, overwrite=args.overwrite, log=lambda m: print(m, file=sys.stderr))
    except DataError as exc:
        print(f"prepare_data: error: {exc}", file=sys.stderr)
        return 2
    if args.print_manifest:
        print(json.dumps(man, indent=2, ensure_ascii=False))
    else:
        sp = man["splits"]
        print(json.dumps({"output_dir": man["output_dir"], "reused": man["reused"],
                          "fingerprint": man["fingerprint"], "vocab_size": man["vocab_size"],
                          "seq_length": man["seq_length"],
                          "train_samples": sp["train"]["samples"], "validation_samples": sp["validation"]["samples"],
                          "train_tokens": sp["train"]["tokens"], "validation_tokens": sp["validation"]["tokens"],
                          "timing": man.get("timing")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
