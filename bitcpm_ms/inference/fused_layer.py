"""A packed decoder layer's decode step as one op (the `DecodeLayer` kernel, bitcpm_ms/kernels/decode_layer.py).

`layer_kernel(layer, attn_scale, num_heads)` returns a Cell that runs the whole layer (both RMSNorms,
the seven packed projections, RoPE + attention over the cache, SwiGLU, the MiniCPM-scaled residuals)
in one AOT op, on the layer's own Parameters (shared, not copied). It is used by the decode-step graph
only when `unfusable_reason(layer)` is None: every projection a bias-free `PackedTernaryLinear` of one
mode, LLaMA's RMSNorms and SiLU-gated feed-forward (or their `cpu_fused_ops` cells), and a plain or
scaled residual add. Anything else (the fake-quant model, another activation, biases) keeps the
per-op graph, which is the general form.

Why: MindSpore's CPU runtime costs tens of microseconds per launched op, and a decoder layer is ~25
ops at decode time; on small models that launch cost, not the kernels, set the decode speed
(docs/generation.md).
"""
from mindspore import ParameterTuple, Tensor, nn

from ..kernels.decode_layer import PROJECTIONS, decode_layer_op, layer_spec


def _projections(layer):
    attn, ffn = layer.attention, layer.feed_forward
    return [getattr(attn, n) for n in PROJECTIONS[:4]] + [getattr(ffn, n, None) for n in PROJECTIONS[4:]]


def unfusable_reason(layer):
    """None when `layer` can run as one DecodeLayer op, else why not (for logs and tests)."""
    projs = _projections(layer)
    if any(type(p).__name__ != "PackedTernaryLinear" for p in projs):
        return "not every projection is a PackedTernaryLinear (fake-quant or float model)"
    if any(p.has_bias for p in projs):
        return "a projection has a bias"
    if len({(p.act_bits, p.eps) for p in projs}) != 1:
        return "projections differ in activation mode"
    ffn = layer.feed_forward
    activation = [type(p.activation).__name__ if p.activation_flag else None for p in projs]
    if type(ffn).__name__ == "FusedLlamaFeedForward":       # cpu_fused_ops: the cell applies w1's SiLU
        activation[4] = type(ffn.silu).__name__
    elif type(ffn).__name__ != "LlamaFeedForward" or ffn.ffn_concat or ffn.use_fused_swiglu:
        return f"feed-forward {type(ffn).__name__} is not LLaMA's separate-w1/w3 SwiGLU"
    if activation != [None] * 4 + ["LlamaSiLU", None, None]:
        return f"feed-forward activations {activation[4:]} are not (SiLU on w1, none on w3, w2)"
    for norm in (layer.attention_norm, layer.ffn_norm):
        if type(norm).__name__ not in ("LlamaRMSNorm", "FusedLlamaRMSNorm"):
            return f"norm {type(norm).__name__} is not LLaMA's RMSNorm"
    if type(layer.add).__name__ not in ("Add", "ScaledResidualAdd"):
        return f"residual {type(layer.add).__name__} is neither Add nor ScaledResidualAdd"
    return None


def layer_kernel(layer, attn_scale: float, num_heads: int, write_cache: bool = False) -> nn.Cell:
    """The DecodeLayer Cell of one packed layer: (h [B, H], k_cache, v_cache, positions [B], cos [B, D],
    sin [B, D]) -> (h_out [B, H], k_rot [B, KVH*D], v [B, KVH*D]). Raises ValueError when unfusable.
    write_cache: the op also stores k_rot / v into slot positions[b] of the caches in place (the
    multi-step decode graph; decode_layer.cpp)."""
    reason = unfusable_reason(layer)
    if reason is not None:
        raise ValueError(f"this layer cannot run as one DecodeLayer op: {reason}")
    return _DecodeLayerCell(layer, attn_scale, num_heads, write_cache)


class _DecodeLayerCell(nn.Cell):
    def __init__(self, layer, attn_scale, num_heads, write_cache):
        super().__init__(auto_prefix=False)
        projs = _projections(layer)
        self.op = decode_layer_op()
        # a ParameterTuple registers the layer's weights with this Cell (MindIR export needs that)
        self.weights = ParameterTuple((layer.attention_norm.weight, layer.ffn_norm.weight)
                                      + tuple(w for p in projs for w in (p.weight_packed, p.weight_scales)))
        scale = float(getattr(layer.add, "scale", 1.0))
        self.spec = Tensor(layer_spec(layer.attention_norm.eps, layer.ffn_norm.eps, scale, attn_scale, num_heads,
                                      projs[0].act_bits, projs[0].eps, write_cache))

    def construct(self, h, k_cache, v_cache, positions, cos, sin):
        return self.op(h, *self.weights, k_cache, v_cache, positions, cos, sin, self.spec)
