#!/usr/bin/env python3
"""Convert checkpoints between Hugging Face MiniCPM format and bitcpm-ms (MindSpore).

  # HF -> MindSpore .ckpt (to start QAT from a full-precision MiniCPM, as BitCPM-CANN does)
  python run/convert_hf.py from_hf --hf_dir DIR --output model.ckpt
      then train with: --load_checkpoint model.ckpt (model dims: see the printed model_config)

  # MindSpore (trained QAT checkpoint) -> HF directory (config.json + model.safetensors)
  python run/convert_hf.py to_hf --config YAML --checkpoint CKPT_OR_DIR --output DIR \
      [--flavour latent|pseudo_quantized] [--dtype float32|float16]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import yaml  # noqa: E402


def from_hf(args):
    import mindspore as ms
    from bitcpm_ms import hf_convert as hc
    cfg_path = os.path.join(args.hf_dir, "config.json")
    if not os.path.isfile(cfg_path):
        raise hc.ConversionError(f"{args.hf_dir} has no config.json")
    import json
    with open(cfg_path, encoding="utf-8") as f:
        model_config = hc.hf_config_to_model_config(json.load(f))
    if not args.output.endswith(".ckpt"):
        raise hc.ConversionError(f"--output {args.output} must end with .ckpt")
    params = hc.hf_to_ms_params(hc.read_hf_weights(args.hf_dir))
    tmp = f"{args.output[:-5]}.tmp-{os.getpid()}.ckpt"      # MindSpore appends .ckpt otherwise
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], tmp)
    os.replace(tmp, args.output)
    print(f"wrote {args.output} ({len(params)} tensors). model.model_config for your YAML:")
    print(yaml.safe_dump({"model": {"model_config": model_config}}, sort_keys=False))
    return 0


def to_hf(args):
    import mindspore as ms
    from bitcpm_ms import hf_convert as hc
    from bitcpm_ms.checkpoints import find_checkpoint
    from bitcpm_ms.config_loader import load_config, sync_quant_section
    from bitcpm_ms.evaluate import build_model
    config = load_config(args.config)
    quant = sync_quant_section(config)
    ckpt = find_checkpoint(args.checkpoint)
    net = build_model(config)                       # the set of model parameter names
    wanted = {p.name for p in net.get_parameters()}
    stored = ms.load_checkpoint(ckpt)
    missing = sorted(wanted - set(stored))
    if missing:
        raise hc.ConversionError(f"checkpoint {ckpt} lacks {missing[:3]}...: not from this config")
    params = {k: stored[k].asnumpy() for k in sorted(wanted)}
    tensors = hc.ms_to_hf_params(params, quant, args.flavour, dtype=np.dtype(args.dtype))
    mc = {k: v for k, v in config.model.model_config.items() if not isinstance(v, dict)}
    hf_config = hc.model_config_to_hf_config(mc, quant, args.flavour)
    hf_config["torch_dtype"] = args.dtype
    tok = ((config.get("processor") or {}).get("tokenizer") or {}).get("vocab_file")
    hc.write_hf_dir(args.output, tensors, hf_config, tok if tok and os.path.isfile(tok) else None)
    print(f"wrote {args.output}: {len(tensors)} tensors ({args.flavour}, {args.dtype})")
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("from_hf", help="HF MiniCPM directory -> MindSpore .ckpt")
    a.add_argument("--hf_dir", required=True)
    a.add_argument("--output", required=True)
    b = sub.add_parser("to_hf", help="bitcpm-ms checkpoint -> HF directory")
    b.add_argument("--config", required=True)
    b.add_argument("--checkpoint", required=True)
    b.add_argument("--output", required=True)
    b.add_argument("--flavour", choices=("latent", "pseudo_quantized"), default="pseudo_quantized")
    b.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    args = p.parse_args(argv)
    from bitcpm_ms.config_loader import ConfigError
    try:
        return from_hf(args) if args.cmd == "from_hf" else to_hf(args)
    except ConfigError as err:           # ConversionError / CheckpointError / config errors
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
