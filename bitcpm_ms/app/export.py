"""Deployment export: trained QAT checkpoint -> packed ternary model -> checkpoint + MindIR.

prepare (quantize_model) -> train -> convert (convert_model) -> export, torchao style. The exported
model holds 2-bit packed weights and per-group scales for every ternary projection (no latent
weights) and runs the fused C++ ternary matmul; embeddings, norms and head stay float32.
"""
import os

import numpy as np
import mindspore as ms
from mindspore import nn

from ..errors import ConfigError
from ..fileio import atomic_dir, atomic_json, check_output_dir
from ..quant import quantized_layer_names
from ..quant.convert import convert_model
from ..training.checkpoint_files import file_digest, publish_checkpoint
from .artifacts import load_model
from ..inference import CachedLM, export_decode_graphs


class LogitsOnly(nn.Cell):
    """Inference wrapper: input_ids [batch, seq] -> logits (the LM returns a tuple in eval mode)."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def construct(self, input_ids):
        return self.lm(input_ids)[0]


def _param_bytes(net) -> int:
    return int(sum(p.asnumpy().nbytes for p in net.get_parameters()))


def export_packed(config, checkpoint: str, output_dir: str, batch_size: int = 1, mindir: bool = True,
                  decode_graphs=None) -> dict:
    """Convert and export; returns (and writes to output_dir/export.json) a summary that includes
    the max |logit difference| between the fake-quant model and the exported MindIR.
    decode_graphs=(prompt_length, cache_length or None): also write the KV-cache decoding graphs
    of the packed model to output_dir/decode (bitcpm_ms.inference.export_decode_graphs)."""
    check_output_dir(output_dir, error=ConfigError)          # before the slow part
    mc = config.model.model_config
    mc.batch_size = batch_size
    net, ckpt = load_model(config, checkpoint)
    net.set_train(False)
    seq = int(mc.seq_length)
    ids = ms.Tensor(np.random.default_rng(0).integers(0, int(mc.vocab_size), (batch_size, seq)).astype(np.int32))
    ref = LogitsOnly(net)(ids).asnumpy()
    latent_bytes = _param_bytes(net)
    layers = quantized_layer_names(net)
    latent_linear = sum(_param_bytes(c) for n, c in net.cells_and_names() if n in layers)

    convert_model(net)
    packed_linear = sum(_param_bytes(c) for n, c in net.cells_and_names() if n in layers)
    packed_model = LogitsOnly(net)
    packed_logits = packed_model(ids).asnumpy()
    summary = {"checkpoint": os.path.abspath(ckpt), "seq_length": seq, "batch_size": batch_size,
               "latent_param_bytes": latent_bytes, "packed_param_bytes": _param_bytes(net),
               "quantized_layers": len(layers), "latent_linear_bytes": latent_linear,
               "packed_linear_bytes": packed_linear,
               "act_bits": (mc.get("qat_config") or {}).get("act_bits"),
               "max_abs_diff_packed_vs_fake_quant": float(np.abs(packed_logits - ref).max()),
               "logit_scale": float(np.abs(ref).max())}
    with atomic_dir(output_dir, error=ConfigError) as tmp:     # all files appear together, fsynced
        publish_checkpoint(lambda path: ms.save_checkpoint(net, path), tmp, "model_packed.ckpt",
                           {"step": None, "source": os.path.abspath(ckpt), "packed": True})
        if mindir:
            ms.export(packed_model, ids, file_name=os.path.join(tmp, "model"), file_format="MINDIR")
            graph = nn.GraphCell(ms.load(os.path.join(tmp, "model.mindir")))
            summary["max_abs_diff_mindir_vs_fake_quant"] = float(np.abs(graph(ids).asnumpy() - ref).max())
        if decode_graphs is not None:
            prompt_len, cache_len = decode_graphs
            summary["decode_graphs"] = export_decode_graphs(CachedLM(net), os.path.join(tmp, "decode"), batch_size,
                                                            prompt_len, cache_len or seq)
        summary["files"] = {name: dict(zip(("bytes", "sha256"), file_digest(os.path.join(tmp, name))))
                            for name in sorted(os.listdir(tmp)) if name.endswith((".ckpt", ".mindir"))}
        atomic_json(summary, os.path.join(tmp, "export.json"), indent=1)
    return summary
