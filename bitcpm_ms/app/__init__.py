"""The application layer: what the command-line tools do, on top of the library layers.

  cli.py        entry points (bitcpm-train, -prepare, -export, -convert-hf); BitCPMError -> exit 2
  overrides.py  `--a.b.c value` parsing (no MindFormers import)
  console.py    one progress line on the console, MindFormers' INFO log in OUTPUT_DIR/log
  config.py     load_config: MindFormers YAML + overrides + our sections' checks
  artifacts.py  resolve(config): output dir, prepared dataset, tokenizer; load_model(config, ckpt)
  checkpoints.py finding checkpoints, loading weights
  runner.py     run(config, args): context, then train / eval / predict
  train.py  evaluate.py  predict.py  export.py  hf.py   the modes and conversions

Nothing below this package imports it (see docs/architecture.md).
"""
