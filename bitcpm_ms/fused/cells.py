"""Drop-in replacements for MindFormers' LLaMA modules that run the fused CPU ops.

Each takes over the parameters (and sub-cells) of the module it replaces, so parameter names and
checkpoints do not change, and keeps the replaced module's call signature. `convert.py` decides
which modules qualify (configuration checks); inside, a float32 input runs the fused op and any
other dtype falls back to the MindSpore op chain the module had (cross-entropy, RMSNorm,
SwiGLU); attention raises FusedOpError on a shape it does not support (ops.FusedAttention) and
ValueError without a mask or with prefix keys / values.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import nn
from mindspore.ops import operations as P

from .ops import FusedAttention, FusedCrossEntropy, FusedRMSNorm, FusedSwiGLU

_F32 = ms.float32


def _inherit_prim_recompute(target, *replaced) -> None:
    """Set `target`'s `recompute` primitive attribute to the first one set among the primitives
    it replaces (select recompute on, or False from select_recompute_exclude)."""
    for prim in replaced:
        if prim is not None and "recompute" in prim.attrs:
            target.add_prim_attr("recompute", prim.attrs["recompute"])
            return


class FusedCrossEntropyLoss(nn.Cell):
    """MindFormers' CrossEntropyLoss(logits [N, V], labels [N], input_mask [N]) -> scalar:
    sum(loss_i * mask_i) / (sum(mask) + 1e-8), the per-token loss from one fused pass.
    `fallback` is the replaced CrossEntropyLoss (no parameters), used for non-float32 logits."""

    def __init__(self, fallback: nn.Cell):
        super().__init__()
        self.fallback = fallback
        self.ce = FusedCrossEntropy()
        self.reshape = P.Reshape()
        self.cast = P.Cast()
        self.sum = P.ReduceSum()
        self.eps = ms.Tensor(1e-8, _F32)

    def construct(self, logits, label, input_mask):
        if logits.dtype != _F32 or logits.ndim != 2:
            return self.fallback(logits, label, input_mask)
        loss, _ = self.ce(logits, self.cast(self.reshape(label, (-1,)), ms.int32))
        mask = self.reshape(input_mask, (-1,))
        return self.sum(loss * mask) / (self.sum(mask) + self.eps)


class FusedLlamaRMSNorm(nn.Cell):
    """LlamaRMSNorm (non-fused-kernel path) with the fused op for float32; same `weight` Parameter."""

    def __init__(self, norm: nn.Cell):
        super().__init__()
        self.weight = norm.weight
        self.eps = float(norm.eps)
        self.compute_type = norm.compute_type
        self.op = FusedRMSNorm(self.eps)
        self.cast = P.Cast()
        self.square = P.Square()
        self.mean = P.ReduceMean(keep_dims=True)
        self.rsqrt = P.Rsqrt()

    def construct(self, x):
        if x.dtype == _F32 and self.compute_type == _F32:
            return self.op(x, self.weight)[0]
        original_type = x.dtype            # LlamaRMSNorm._self_norm
        h = self.cast(x, self.compute_type)
        out = h * self.rsqrt(self.mean(self.square(h), -1) + self.eps)
        return self.cast(out, original_type) * self.cast(self.weight, original_type)


class FusedLlamaFeedForward(nn.Cell):
    """LlamaFeedForward (separate w1 / w3, SiLU on w1): w2(silu(w1 x) * w3 x) with the fused
    SwiGLU op for float32. Takes over w1, w2, w3; w1's own activation is switched off (the op
    applies it), and re-applied with MindSpore's SiLU for other dtypes."""

    def __init__(self, ffn: nn.Cell):
        super().__init__()
        self.w1, self.w2, self.w3 = ffn.w1, ffn.w2, ffn.w3
        self.silu = ffn.w1.activation
        self.w1.activation_flag = False
        self.dtype = ffn.dtype
        self.cast = P.Cast()
        self.mul = P.Mul()                  # LlamaFeedForward's `mul` (fallback path)
        self.op = FusedSwiGLU()
        # Select recompute (MindFormers' default targets feed_forward.mul and
        # feed_forward.w1.activation.silu) marks primitives the fused op replaces; the op's output
        # is their product, so it takes their setting (the swap itself copies `mul`'s to `mul`).
        _inherit_prim_recompute(self.op.fwd, ffn.mul, getattr(ffn.w1.activation, "silu", None))

    def construct(self, x):
        x = self.cast(x, self.dtype)
        gate = self.w1(x)
        up = self.w3(x)
        if gate.dtype == _F32:
            hidden = self.op(gate, up)
        else:
            hidden = self.mul(up, self.silu(gate))
        return self.w2(hidden)


class FusedLlamaAttention(nn.Cell):
    """LLamaAttention for training without KV cache or flash attention: wq / wk / wv, then the
    fused rotary + GQA attention op (ops.FusedAttention), then wo. Takes over the four projections.
    Only the arguments of that path are used (the KV-cache ones are ignored, as LLamaAttention
    ignores them without use_past); no mask or a prefix raises ValueError (graph mode raises
    built-in exceptions only)."""

    def __init__(self, attn: nn.Cell):
        super().__init__()
        self.wq, self.wk, self.wv, self.wo = attn.wq, attn.wk, attn.wv, attn.wo
        self.dtype = attn.dtype
        self.n_head, self.n_kv_head, self.head_dim = attn.n_head, attn.n_kv_head, attn.head_dim
        self.op = FusedAttention(attn.n_head, attn.n_kv_head, attn.head_dim)
        # LLamaAttention marks its core ops for select recompute (rotary, scores, softmax, weighted
        # values; llama_transformer.py, `select_recompute and not use_flash_attention`); the fused
        # op computes all of them and takes their setting.
        _inherit_prim_recompute(self.op.fwd, getattr(attn, "softmax", None), getattr(attn, "batch_matmul", None),
                                getattr(attn, "batch_matmul_q_k", None))
        self.cast = P.Cast()
        self.reshape = P.Reshape()

    def construct(self, x, freqs_cis, mask=None, batch_valid_length=None, block_tables=None, slot_mapping=None,
                  prefix_keys_values=None, q_seq_lens=None, kv_mask=None, seq_chunk=None, actual_seq_len=None):
        if mask is None or prefix_keys_values is not None:
            raise ValueError("FusedLlamaAttention: needs the attention mask and no prefix keys/values "
                             "(build the model without cpu_fused_ops for that)")
        ori_dtype = x.dtype
        query = self.cast(self.wq(x), self.dtype)           # [bs, seq, n_head * head_dim]
        key = self.cast(self.wk(x), self.dtype)             # [bs, seq, n_kv_head * head_dim]
        value = self.cast(self.wv(x), self.dtype)
        freqs_cos, freqs_sin, _ = freqs_cis                 # [1, 1, seq, head_dim]
        context, _ = self.op(query, key, value, self.cast(freqs_cos, _F32), self.cast(freqs_sin, _F32),
                             self.cast(mask, _F32))         # [bs, seq, n_head * head_dim]
        return self.cast(self.wo(context), ori_dtype)
