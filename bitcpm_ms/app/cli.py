"""Command-line entry points: `bitcpm-train`, `bitcpm-prepare`, `bitcpm-export`, `bitcpm-convert-hf`
(console scripts of pyproject.toml; `run/*.py` call the same functions).

One wrapper, `console.cli_main`, turns every `BitCPMError` (bad config, data, checkpoint, path) into a
single `error: ...` line on stderr and exit status 2; anything else is a bug and keeps its
traceback. Arguments are parsed and checked before MindSpore/MindFormers are imported, so a typo
fails in a fraction of a second.
"""
import argparse
import json
import os
import sys

from ..errors import BitCPMError, ConfigError
from .console import cli_main, import_mindformers
from .overrides import parse_overrides, split_argv
from .predict_args import PREDICT_FLAGS, add_predict_arguments, check_predict_arguments
from .gguf_cli import add_gguf_arguments, check_gguf_arguments, run_gguf_export


def _bool(text) -> bool:
    value = str(text).lower()
    if value not in ("1", "0", "true", "false", "yes", "no"):
        raise ConfigError(f"expected true or false, got {text!r}")
    return value in ("1", "true", "yes")


def _peek_output_dir(config_path: str, override: str = None) -> str:
    """The run's output_dir, read before MindFormers is imported (for its log files)."""
    if override:
        return override
    try:
        import yaml
        with open(config_path, encoding="utf-8") as f:
            return (yaml.safe_load(f) or {}).get("output_dir") or "./output"
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return "./output"


# ------------------------------------------------------------------ bitcpm-train / run/run_bitcpm.py
TRAIN_FLAGS = ("config", "run_mode", "output_dir", "max_steps", "load_checkpoint", "resume_training",
               "prompt", "max_new_tokens", "eval_max_batches", "verbose", "init_from_checkpoint", "allow_random_init",
               "verify_data") + PREDICT_FLAGS


def train_parser():
    p = argparse.ArgumentParser(
        prog="bitcpm-train", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, evaluate or sample a BitCPM model from a MindFormers-style YAML.\n"
                    "Dotted overrides edit the YAML: --quant.enabled false, --quant.group_size 64, ...")
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("--run_mode", choices=("train", "eval", "predict"), default=None,
                   help="default: the YAML's run_mode")
    p.add_argument("--output_dir", default=None, help="checkpoints, metrics.jsonl, eval.json (default: YAML)")
    p.add_argument("--max_steps", type=int, default=None, help="stop training after N optimizer steps")
    p.add_argument("--load_checkpoint", default=None, help="checkpoint file or directory to start from")
    p.add_argument("--resume_training", default=None, help="true: also restore optimizer state and step")
    p.add_argument("--init_from_checkpoint", default=None,
                   help="start training from these weights only (fresh optimizer, step 0, re-warmup)")
    p.add_argument("--allow_random_init", default=None,
                   help="true: let a require_init_checkpoint config train QAT from random weights")
    p.add_argument("--prompt", default="The", help="predict mode: text to continue")
    p.add_argument("--max_new_tokens", type=int, default=32, help="predict mode: tokens to generate")
    p.add_argument("--eval_max_batches", type=int, default=None, help="eval mode: limit batches")
    add_predict_arguments(p)
    p.add_argument("--verbose", action="store_true", help="also show MindFormers' INFO log on the console")
    p.add_argument("--verify_data", action="store_true",
                   help="re-hash every training shard against the dataset's manifest (default: on first use)")
    return p


def check_cli_values(args) -> None:
    """Flags whose values are wrong whatever the config says."""
    if args.prompt is not None and not args.prompt:
        raise ConfigError("--prompt is empty: give the text to continue")
    for flag in ("max_new_tokens", "eval_max_batches"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be >= 1, got {getattr(args, flag)}")


def parse_train_args(argv):
    """(args, overrides) of a bitcpm-train command line; raises ConfigError on bad values."""
    own, rest = split_argv(argv, TRAIN_FLAGS)
    args = train_parser().parse_args(own)
    overrides = parse_overrides(rest)
    if args.output_dir is not None:
        overrides["output_dir"] = args.output_dir
    if args.run_mode is not None:
        overrides["run_mode"] = args.run_mode
    check_cli_values(args)
    if args.max_steps is not None:
        if args.max_steps < 1:
            raise ConfigError(f"--max_steps must be >= 1, got {args.max_steps}")
        overrides["runner_config.stop_step"] = args.max_steps
    if args.load_checkpoint is not None:
        overrides["load_checkpoint"] = args.load_checkpoint
    if args.resume_training is not None:
        overrides["resume_training"] = _bool(args.resume_training)
    if args.init_from_checkpoint is not None:
        overrides["init_from_checkpoint"] = args.init_from_checkpoint
    if args.allow_random_init is not None:
        overrides["allow_random_init"] = _bool(args.allow_random_init)
    check_predict_arguments(args)
    return args, overrides


@cli_main
def train_main(argv):
    args, overrides = parse_train_args(argv)
    out = _peek_output_dir(args.config, overrides.get("output_dir"))
    import_mindformers(log_dir=os.path.join(os.path.abspath(out), "log"), verbose=args.verbose)
    from .config import load_config
    from .runner import run
    return run(seeded(load_config(args.config, overrides), args), args)


def seeded(config, args):
    """`--seed N` of a training run is the config's top-level seed (random init and data order), as in
    run_mindformer.py; in predict mode it is the sampling seed only. (It was taken by the predict flags
    alone, so `--seed 2` left a training run at the YAML's seed.)"""
    if args.seed is not None and config.get("run_mode", "train") == "train":
        config.seed = args.seed
    return config


# ------------------------------------------------------------------ bitcpm-prepare / run/prepare_data.py
def prepare_parser():
    ap = argparse.ArgumentParser(
        prog="bitcpm-prepare", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Prepare a packed MindRecord dataset (tokenizer + train/validation shards + manifest).\n"
                    "Defaults come from the YAML's data: section; flags override them.")
    ap.add_argument("--config", help="MindFormers-style YAML with a top-level data: section")
    ap.add_argument("--input", nargs="+", help='corpus files/dirs/globs, or "gcide" (default corpus)')
    ap.add_argument("--format", choices=["auto", "text", "jsonl", "parquet", "dictd"])
    ap.add_argument("--text_field", help="JSONL/Parquet field holding the text")
    ap.add_argument("--doc_separator",
                    help=r'plain-text document separator; "\n\n" = blank lines, "" = one file one document')
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
    ap.add_argument("--eod_pad_length", type=int,
                    help="width of the actual_seq_len column: the most documents one sample may hold (default 128)")
    ap.add_argument("--no_shuffle", action="store_true")
    ap.add_argument("--num_workers", type=int)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing different dataset")
    ap.add_argument("--no_progress", action="store_true")
    ap.add_argument("--print_manifest", action="store_true")
    return ap


@cli_main
def prepare_main(argv):
    args = prepare_parser().parse_args(argv)
    from ..data.config import config_from_yaml
    from ..data.packing import prepare_dataset
    skip = ("config", "overwrite", "no_progress", "print_manifest", "no_shuffle")
    overrides = {k: v for k, v in vars(args).items() if v is not None and k not in skip}
    if args.doc_separator is not None:
        overrides["doc_separator"] = args.doc_separator.encode().decode("unicode_escape") or None
    if args.input is not None:
        overrides["input"] = args.input[0] if len(args.input) == 1 else args.input
    if args.no_shuffle:
        overrides["shuffle"] = False
    if args.no_progress:
        overrides["progress"] = False
    cfg = config_from_yaml(args.config, overrides)
    man = prepare_dataset(cfg, overwrite=args.overwrite, log=lambda m: print(m, file=sys.stderr))
    if args.print_manifest:
        print(json.dumps(man, indent=2, ensure_ascii=False))
        return 0
    sp = man["splits"]
    print(json.dumps({"output_dir": man["output_dir"], "reused": man["reused"], "fingerprint": man["fingerprint"],
                      "vocab_size": man["vocab_size"], "seq_length": man["seq_length"],
                      "train_samples": sp["train"]["samples"], "validation_samples": sp["validation"]["samples"],
                      "train_tokens": sp["train"]["tokens"], "validation_tokens": sp["validation"]["tokens"],
                      "timing": man.get("timing")}, indent=2))
    return 0


# ------------------------------------------------------------------ bitcpm-export / run/export_bitcpm.py
def export_parser():
    p = argparse.ArgumentParser(
        prog="bitcpm-export", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a trained ternary QAT checkpoint for inference: packed 2-bit weights + MindIR.\n"
                    "Writes model_packed.ckpt, model.mindir and export.json (max logit difference of the\n"
                    "packed model and the reloaded MindIR against the fake-quant model).\n"
                    "--format gguf writes one .gguf file for llama.cpp instead (docs/gguf.md).\n"
                    "Dotted overrides (--quant.group_size 256) give the config the run trained with.")
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a training output_dir")
    p.add_argument("--output_dir", help="--format packed: the export directory")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--no_mindir", action="store_true", help="only write the packed checkpoint")
    add_gguf_arguments(p)
    p.add_argument("--decode_graphs", action="store_true",
                   help="also export the KV-cache prefill + decode-step graphs to OUTPUT_DIR/decode (MindIR)")
    p.add_argument("--decode_prompt_length", type=int, default=64, help="padded prompt length of those graphs")
    p.add_argument("--decode_cache_length", type=int, default=None, help="their cache length (default: seq_length)")
    return p


@cli_main
def export_main(argv):
    args, rest = export_parser().parse_known_args(argv)
    overrides = parse_overrides(rest)           # --quant.group_size 256: the config the run trained with
    check_gguf_arguments(args)
    import_mindformers()
    from .config import load_config
    config = load_config(args.config, overrides)
    if args.format == "gguf":
        return run_gguf_export(args, config)
    if not config.model.model_config.qat_config.enabled:
        raise ConfigError("export: quant.enabled is false in this config; nothing to pack")
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    from .export import export_packed
    decode = (args.decode_prompt_length, args.decode_cache_length) if args.decode_graphs else None
    s = export_packed(config, args.checkpoint, args.output_dir, args.batch_size, not args.no_mindir, decode)
    mib = 2 ** 20
    print(f"exported to {args.output_dir}: parameters {s['latent_param_bytes'] / mib:.1f} MiB latent -> "
          f"{s['packed_param_bytes'] / mib:.1f} MiB packed ({s['quantized_layers']} ternary layers: "
          f"{s['latent_linear_bytes'] / mib:.1f} -> {s['packed_linear_bytes'] / mib:.2f} MiB); "
          f"max |logit diff| packed {s['max_abs_diff_packed_vs_fake_quant']:.2e}"
          + (f", MindIR {s['max_abs_diff_mindir_vs_fake_quant']:.2e}" if "max_abs_diff_mindir_vs_fake_quant" in s
             else ""))
    return 0


# ------------------------------------------------------------------ bitcpm-convert-hf / run/convert_hf.py
def convert_hf_parser():
    p = argparse.ArgumentParser(
        prog="bitcpm-convert-hf", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert checkpoints between Hugging Face MiniCPM format and bitcpm-ms (MindSpore).\n"
                    "  from_hf: HF MiniCPM / BitCPM-CANN directory -> OUT_DIR with model.ckpt, config.yaml, tokenizer/\n"
                    "  to_hf:   bitcpm-ms checkpoint -> HF directory (config.json + model.safetensors)")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("from_hf", help="HF MiniCPM / BitCPM-CANN directory -> a ready-to-run directory")
    a.add_argument("--hf_dir", required=True, help="config.json, *.safetensors (or index + shards, or "
                   "pytorch_model.bin with torch), tokenizer files")
    a.add_argument("--output", required=True, help="output directory (model.ckpt, config.yaml, tokenizer/)")
    a.add_argument("--seq_length", type=int, default=512, help="training / eval sequence length of config.yaml")
    a.add_argument("--quantized", choices=("auto", "yes", "no"), default="auto",
                   help="pseudo-quantized (ternary x scale) weights: detect (auto), require, or import as float")
    a.add_argument("--tokenizer_dir", default=None, help="tokenizer files, when not in --hf_dir")
    a.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    b = sub.add_parser("to_hf", help="bitcpm-ms checkpoint -> HF directory")
    b.add_argument("--config", required=True)
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--output", required=True)
    b.add_argument("--flavour", choices=("latent", "pseudo_quantized"), default="pseudo_quantized")
    b.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    b.add_argument("--tokenizer", default=None, help="tokenizer.model or HF tokenizer directory to ship "
                   "(default: the config's processor.tokenizer.vocab_file or prepared dataset)")
    return p


@cli_main
def convert_hf_main(argv):
    args, rest = convert_hf_parser().parse_known_args(argv)
    if rest and args.cmd != "to_hf":
        raise ConfigError(f"unrecognized arguments: {' '.join(rest)}")
    overrides = parse_overrides(rest)           # to_hf: --quant.enabled true, as for bitcpm-train
    import_mindformers()
    from . import hf
    if args.cmd == "from_hf":
        from .hf_import import from_hf
        if args.seq_length < 1:
            raise ConfigError(f"--seq_length must be >= 1, got {args.seq_length}")
        s = from_hf(args.hf_dir, args.output, args.seq_length, args.quantized, args.tokenizer_dir, args.overwrite)
        kind = f"pseudo-quantized, group size {s['group_size']}" if s["pseudo_quantized"] else "full precision"
        print(f"wrote {s['output_dir']}: {s['tensors']} tensors ({kind}; {'tied' if s['tied'] else 'untied'} head; "
              f"{'LongRoPE' if s['rope_scaling'] else 'plain RoPE'}). Run it with:\n"
              f"  python3 run/run_bitcpm.py --config {os.path.join(s['output_dir'], 'config.yaml')} "
              "--run_mode predict --chat \"Hello\"")
        return 0
    from .artifacts import resolve
    from .config import load_config
    config = load_config(args.config, overrides)
    n = hf.to_hf(config, args.checkpoint, args.output, args.tokenizer or resolve(config).tokenizer_file,
                 args.flavour, args.dtype)
    print(f"wrote {args.output}: {n} tensors ({args.flavour}, {args.dtype})")
    return 0
