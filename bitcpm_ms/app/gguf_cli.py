"""`bitcpm-export --format gguf` (run/export_bitcpm.py): the command-line side of `gguf_export`.

    python3 run/export_bitcpm.py --config CFG --checkpoint OUTPUT_DIR --format gguf \\
        --output model.gguf [--gguf_type tq2_0|tq1_0|f16|f32] [--embedding_type f16|f32|q8_0] \\
        [--requantize] [--eval_batches 16] [--overwrite]

Light on purpose (no MindSpore, no gguf at import): the command line is checked with
`gguf_options.check_export_args` before anything slow is imported.
"""
import json

from ..errors import ConfigError
from .gguf_options import EMBEDDING_TYPES, GGUF_TYPES, check_export_args

def add_gguf_arguments(p) -> None:
    p.add_argument("--format", choices=("packed", "gguf"), default="packed",
                   help="packed: MindSpore checkpoint + MindIR (--output_dir); gguf: one llama.cpp file (--output)")
    p.add_argument("--output", help="--format gguf: the .gguf file to write")
    p.add_argument("--gguf_type", default="tq2_0",
                   help=f"type of the ternary projections: {', '.join(GGUF_TYPES)} (default tq2_0)")
    p.add_argument("--embedding_type", default="f16",
                   help=f"type of the embeddings and head: {', '.join(EMBEDDING_TYPES)} (default f16)")
    p.add_argument("--requantize", action="store_true",
                   help="tq2_0/tq1_0 with a group size they cannot hold: fit one scale per 256 weights (lossy) "
                        "and print the weight error and held-out perplexity change, instead of refusing")
    p.add_argument("--eval_batches", type=int, default=16,
                   help="--requantize: validation batches for the perplexity change (0: skip it)")
    p.add_argument("--overwrite", action="store_true", help="--format gguf: replace an existing output file")


def check_gguf_arguments(args) -> None:
    """The flag combinations of both formats, before anything is imported."""
    if args.format == "packed":
        if not args.output_dir:
            raise ConfigError("--format packed needs --output_dir")
        if args.output or args.requantize or args.overwrite:
            raise ConfigError("--output, --requantize and --overwrite belong to --format gguf")
        return
    if not args.output:
        raise ConfigError("--format gguf needs --output FILE.gguf")
    if args.output_dir:
        raise ConfigError("--format gguf writes one file: give --output FILE.gguf, not --output_dir")
    if args.eval_batches < 0:
        raise ConfigError(f"--eval_batches must be >= 0, got {args.eval_batches}")
    check_export_args(args.output, args.gguf_type, args.embedding_type, args.overwrite)


def run_gguf_export(args, config) -> int:
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    from .gguf_export import export_gguf
    s = export_gguf(config, args.checkpoint, args.output, gguf_type=args.gguf_type,
                    embedding_type=args.embedding_type, requantize=args.requantize, overwrite=args.overwrite,
                    eval_batches=args.eval_batches)
    mib = 2 ** 20
    print(f"wrote {args.output}: {s['file_bytes'] / mib:.2f} MiB, {s['tensors']} tensors "
          f"({s['ternary_tensors']} ternary as {s['gguf_type']}, embeddings/head {s['embedding_type']}"
          + (f", {s['requantized_tensors']} re-fitted to 256-weight blocks" if s["requantized_tensors"] else "")
          + f"); add_bos {s['add_bos']}, add_space_prefix {s['add_space_prefix']}")
    if "requantization" in s:
        print(json.dumps(s["requantization"], indent=1))
    return 0
