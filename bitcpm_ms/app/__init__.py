"""The application layer: what the command-line tools do, on top of the library layers.

  cli.py        entry points (bitcpm-train, -prepare, -export, -convert-hf); BitCPMError -> exit 2
  overrides.py  `--a.b.c value` parsing (no MindFormers import)
  console.py    one progress line on the console, MindFormers' INFO log in OUTPUT_DIR/log
  config.py     load_config: MindFormers YAML + overrides + our sections' checks
  artifacts.py  resolve(config): output dir, prepared dataset, tokenizer; load_model(config, ckpt)
  checkpoints.py finding checkpoints (newest good one), loading weights
  resume.py     the verified checkpoint a run starts from (fallback, rank agreement, architecture check)
  preflight.py  out-of-range config values; training data vs model and manifest
  runlock.py    OUTPUT_DIR/.lock: one training run per output directory
  runner.py     run(config, args): context, then train / eval / predict
  train.py  evaluate.py  predict.py  export.py  hf.py   the modes and conversions

Nothing below this package imports it (see docs/architecture.md).
"""
