"""A whole packed model as one op: K greedy decode steps (the `DecodeModel` kernel,
bitcpm_ms/kernels/decode_model.py) or the prompt pass (`PrefillModel`, bitcpm_ms/kernels/prefill_model.py).

`model_kernel(lm, steps, cos, sin)` returns a Cell whose one op runs the embedding (MiniCPM-scaled),
every decoder layer (the DecodeLayer arithmetic, caches written in place), the (scaled) final norm,
the head and the argmax of `steps` tokens, on the model's own Parameters (shared, not copied). The
multi-step decode graph (decoder.py, DecodeMultiStepGraph) uses it when `model_unfusable_reason(lm)`
is None; otherwise it keeps one DecodeLayer op per layer, which needs only fusable layers.
`prefill_kernel(lm, cos, sin)` is the same Cell around PrefillModel: (input_ids [B, C], lengths [B],
caches) -> logits [B, V] at each row's last prompt token, the prompt's keys and values written into the
caches (CachedLM.prefill_into uses it for such models).

Why: with one op per layer a token still costs ~L + 6 op launches in MindSpore's CPU runtime (tens of
microseconds each); with this op a graph call of K tokens costs one, and a prompt pass one instead of
~30 per layer (docs/generation.md, "Speed").
"""
import numpy as np
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn

from ..kernels.decode_layer import layer_spec
from ..kernels.decode_model import decode_model_op, model_spec
from ..kernels.prefill_model import prefill_model_op
from .fused_layer import _projections, unfusable_reason

_NORMS = ("LlamaRMSNorm", "FusedLlamaRMSNorm")


def _unwrap(cell):
    """(inner cell, scale) of a ScaleOutput wrapper (models/bitcpm.py), or (cell, 1.0)."""
    if type(cell).__name__ == "ScaleOutput":
        return cell.cell, float(cell.scale)
    return cell, 1.0


def model_unfusable_reason(lm):
    """None when lm's decode steps can run as one DecodeModel op, else why not (for logs and tests)."""
    for i, layer in enumerate(lm.model.layers):
        reason = unfusable_reason(layer)
        if reason is not None:
            return f"layer {i}: {reason}"
    embed, _ = _unwrap(lm.model.tok_embeddings)
    weight = getattr(embed, "embedding_weight", None)
    if type(embed).__name__ != "LlamaEmbedding" or weight is None or weight.dtype != ms.float32:
        return "the embedding is not LLaMA's float32 embedding table"
    norm, _ = _unwrap(lm.model.norm_out)
    if type(norm).__name__ not in _NORMS:
        return f"final norm {type(norm).__name__} is not LLaMA's RMSNorm"
    head = lm.lm_head
    if type(head).__name__ != "Linear" or head.has_bias or head.activation_flag or head.weight.dtype != ms.float32:
        return "the head is not a bias-free float32 Linear"
    return None


def model_kernel(lm, steps: int, cos: Tensor, sin: Tensor, head_weight: Parameter = None) -> nn.Cell:
    """The DecodeModel Cell of a packed model: (input_ids [B, 1] int32, positions [B] int32, k_0, v_0,
    ..., k_{L-1}, v_{L-1}) -> tokens [B, steps] int32, the caches written in place. cos / sin: the
    model's rotary tables [P, D] float32 (unsigned sin). head_weight: a float16 copy of the head
    weight to use instead (decoder.half_head_weight). Raises ValueError when lm cannot be fused.
    Borrowing may rename the model's Parameters: the caller restores their names (the decoder does)."""
    reason = model_unfusable_reason(lm)
    if reason is not None:
        raise ValueError(f"this model cannot decode as one DecodeModel op: {reason}")
    return _WholeModelCell(lm, decode_model_op(int(steps)), int(steps), cos, sin, head_weight)


def prefill_kernel(lm, cos: Tensor, sin: Tensor, head_weight: Parameter = None) -> nn.Cell:
    """The PrefillModel Cell of a packed model: (input_ids [B, C] int32 right-padded, lengths [B] int32,
    k_0, v_0, ...) -> logits [B, V] float32 at each row's last prompt token; slots 0..lengths[b]-1 of the
    caches written in place. Arguments and name restoring as model_kernel's."""
    reason = model_unfusable_reason(lm)
    if reason is not None:
        raise ValueError(f"this model cannot run its prompt pass as one PrefillModel op: {reason}")
    return _WholeModelCell(lm, prefill_model_op(), 0, cos, sin, head_weight)


class _WholeModelCell(nn.Cell):
    """op(ids, positions or lengths, spec, embedding, cos, sin, final norm, head, layer specs, L x 16 layer
    weights, caches) on the model's own Parameters: DecodeModel and PrefillModel take the same inputs."""

    def __init__(self, lm, op, steps, cos, sin, head_weight):
        super().__init__(auto_prefix=False)
        model = lm.model
        embed, scale_emb = _unwrap(model.tok_embeddings)
        norm, logit_scale = _unwrap(model.norm_out)
        self.op = op
        self.embedding = embed.embedding_weight
        self.norm_weight = norm.weight
        self.head_weight = lm.lm_head.weight if head_weight is None else head_weight
        self.cos, self.sin = cos, sin
        self.spec = Tensor(model_spec(scale_emb, norm.eps, logit_scale, steps))
        attn = model.layers[0].attention
        attn_scale, heads = 1.0 / np.sqrt(int(attn.head_dim)), int(attn.n_head)
        rows, weights = [], []
        for layer in model.layers:
            projs = _projections(layer)
            residual_scale = float(getattr(layer.add, "scale", 1.0))
            rows.append(layer_spec(layer.attention_norm.eps, layer.ffn_norm.eps, residual_scale, attn_scale, heads,
                                   projs[0].act_bits, projs[0].eps, write_cache=True))
            weights += [layer.attention_norm.weight, layer.ffn_norm.weight]
            weights += [w for p in projs for w in (p.weight_packed, p.weight_scales)]
        self.layer_specs = Tensor(np.concatenate(rows))
        # a ParameterTuple registers the layers' weights with this Cell (borrowed, not copied)
        self.layer_weights = ParameterTuple(weights)

    def construct(self, input_ids, positions, *cache):
        return self.op(input_ids, positions, self.spec, self.embedding, self.cos, self.sin, self.norm_weight,
                       self.head_weight, self.layer_specs, *self.layer_weights, *cache)
