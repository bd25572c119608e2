"""bitcpm-ms: ternary (1.58-bit) quantization-aware training of MiniCPM-style LLMs on MindSpore.

Subpackages:
  quant    -- quantization primitives (numpy reference + MindSpore ops), STE Cells, TernaryLinear, quantize_model
  models   -- BitCPM (MiniCPM architecture) config and causal LM on MindFormers' LLaMA
  training -- CPU/Ascend-safe train-step wrapper, metrics callback, FLOP accounting
  data     -- corpus readers, SentencePiece tokenizer, MindRecord packing
  kernels  -- packed 2-bit ternary matmul (AOT custom op) and its numpy reference
"""
__version__ = "0.1.0"
