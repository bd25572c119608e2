#!/usr/bin/env python3
"""Export a trained ternary QAT checkpoint for inference: packed 2-bit weights + MindIR.

    python run/export_bitcpm.py --config yaml_configs/bitcpm_tiny_cpu.yaml \
        --checkpoint output/bitcpm_tiny_cpu --output_dir output/bitcpm_tiny_export [--batch_size 1]

Writes model_packed.ckpt, model.mindir and export.json (sizes, and the max logit difference of
the packed model and of the reloaded MindIR against the fake-quant model). The MindIR records the
absolute path of the compiled kernel library (BITCPM_MS_CACHE): keep it where it was built.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--checkpoint", required=True, help="checkpoint file, or a training output_dir")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--no_mindir", action="store_true", help="only write the packed checkpoint")
    args = p.parse_args(argv)
    from bitcpm_ms.config_loader import ConfigError, load_config
    try:
        config = load_config(args.config)
        if not config.model.model_config.qat_config.enabled:
            raise ConfigError("export: quant.enabled is false in this config; nothing to pack")
        import mindspore as ms
        ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
        from bitcpm_ms.export import export_packed
        s = export_packed(config, args.checkpoint, args.output_dir, args.batch_size, not args.no_mindir)
    except (ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"exported to {args.output_dir}: parameters {s['latent_param_bytes'] / 2**20:.1f} MiB latent -> "
          f"{s['packed_param_bytes'] / 2**20:.1f} MiB packed ({s['quantized_layers']} ternary layers: "
          f"{s['latent_linear_bytes'] / 2**20:.1f} -> {s['packed_linear_bytes'] / 2**20:.2f} MiB); "
          f"max |logit diff| packed "
          f"{s['max_abs_diff_packed_vs_fake_quant']:.2e}"
          + (f", MindIR {s['max_abs_diff_mindir_vs_fake_quant']:.2e}" if "max_abs_diff_mindir_vs_fake_quant" in s
             else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
