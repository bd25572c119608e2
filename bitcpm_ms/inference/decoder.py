"""KV-cache decoding graphs over a trained BitCPM model: a prefill graph, a decode-step graph and
(packed models) a multi-step greedy graph.

MindFormers' own incremental path (`use_past=True`) cannot run on CPU: its `InferAttention` needs
`ApplyRotaryPosEmb` (float16/bfloat16 only, no CPU kernel), `ReshapeAndCache` and `PagedAttention`
(Ascend-only; "Unsupported op ... on CPU", see docs/generation.md). These Cells are the compact
replacement. They hold no weights of their own: they call the model's own cells (embedding, RMSNorms,
q/k/v/o projections, SwiGLU feed-forward, the MiniCPM residual `add` and scaled final norm, lm_head),
so they run unchanged on the fake-quant model (`TernaryLinear`) and on the packed model
(`PackedTernaryLinear`, after `convert_model`), and give the full-recompute logits up to float
reassociation. Only attention is rewritten, with MindFormers' numerics: rotate-half RoPE from the
model's own cos/sin tables, scores `q.k * 1/sqrt(d)` plus an additive -10000 mask, softmax in float32,
grouped-query attention (query head h reads KV head h // n_rep).

Cache contract (host-owned; see cache.py). The cache of layer l is two float32 arrays
k_l, v_l [B, kv_heads, S, head_dim], passed to the step graph as inputs and never copied:
  PrefillGraph(input_ids [B, P] int32, valid_length [B] int32)
      -> logits [B, V] (at position valid_length - 1 of each row),
         keys [L, B, kv_heads, P, head_dim], values [L, B, kv_heads, P, head_dim]
  DecodeStepGraph(input_ids [B, 1] int32, positions [B] int32, k_0, v_0, ..., k_{L-1}, v_{L-1})
      -> logits [B, V], new keys [L, B, kv_heads, 1, head_dim], new values (same)
The step attends to cache slots j < positions[b] plus the new token itself, and returns only the new
token's K/V: the caller writes them into slot positions[b]. Returning the whole updated cache would
copy it every step (measured 20 ms per step for a 50 MB cache; docs/generation.md).
  DecodeMultiStepGraph(input_ids [B, 1] int32, positions [B] int32, k_0, v_0, ...) -> tokens [B, K] int32
K greedy steps in one call (packed models only): each layer op stores its new K/V into the cache in
place, so the caller writes nothing; step j runs at min(positions + j, S - 1).
  PrefillModelGraph(input_ids [B, P] int32, valid_length [B] int32, k_0, v_0, ...) -> logits [B, V]
The prompt pass as one op (packed models whose whole model qualifies): it writes slots
0..valid_length[b]-1 of the cache itself and runs only the valid tokens.
"""
import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import operations as P

from .fused_layer import layer_kernel, unfusable_reason
from .fused_model import model_kernel, model_unfusable_reason, prefill_kernel
from ..kernels.ops import decode_attention_cell, float_matmul_nt_cell

MASK_VALUE = -10000.0   # MindFormers' LowerTriangularMaskWithDynamic adder


class _Shape:
    """The attention geometry of a LlamaForCausalLM (read from its first layer)."""

    def __init__(self, lm):
        attn = lm.model.layers[0].attention
        self.num_layers = len(lm.model.layers)
        self.num_heads = int(attn.n_head)
        self.kv_heads = int(attn.n_kv_head)
        self.head_dim = int(attn.head_dim)
        self.n_rep = self.num_heads // self.kv_heads
        self.hidden_size = self.num_heads * self.head_dim
        self.vocab_size = int(lm.lm_head.out_channels)
        self.max_positions = int(lm.model.freqs_mgr.freqs_cos.shape[0])


def decoder_shape(lm) -> _Shape:
    return _Shape(lm)


HALF_HEAD_NEEDS = "a float16 head needs the CPU FloatMatmulNT head (a bias-free float32 Linear lm_head)"


def fast_head_ok(lm) -> bool:
    """True when the decoding graphs run lm's head as the FloatMatmulNT kernel (CPU, bias-free float32 Linear)."""
    head = lm.lm_head
    return (ms.get_context("device_target") == "CPU" and type(head).__name__ == "Linear" and not head.has_bias
            and not head.activation_flag and head.weight.dtype == ms.float32)


def half_head_weight(lm):
    """A float16 copy of lm's head weight [V, H], the precision of llama.cpp's F16 output tensor: the
    decode step streams half the bytes (the head is the largest weight of a small ternary model).
    Logits then differ from the float32 model by the weight rounding (~1e-3 relative)."""
    if not fast_head_ok(lm):
        raise ValueError(HALF_HEAD_NEEDS)
    w = lm.lm_head.weight
    return Parameter(Tensor(w.asnumpy().astype(np.float16)), name=w.name + "_float16", requires_grad=False)


class _CachedDecoderBase(nn.Cell):
    """The model's cells, borrowed, plus the shared RoPE / projection helpers."""

    def __init__(self, lm, borrow_layers: bool = True, head_weight=None):
        super().__init__(auto_prefix=False)
        names = {id(p): p.name for p in lm.get_parameters()}
        model = lm.model
        if getattr(lm, "use_past", False):
            raise ValueError("KV-cache decoding builds its own cache: use a model with use_past=False")
        self.shape_info = _Shape(lm)
        s = self.shape_info
        self.num_layers, self.num_heads, self.kv_heads = s.num_layers, s.num_heads, s.kv_heads
        self.head_dim, self.n_rep, self.hidden_size = s.head_dim, s.n_rep, s.hidden_size
        # Only the cells a graph calls are borrowed: every call of a Cell walks its whole tree in Python
        # (Cell.compile_phase), ~1 ms per step for the full model's ~115 cells (docs/generation.md).
        self.embed = model.tok_embeddings
        if borrow_layers:
            self.layers = model.layers
        self.norm_out = model.norm_out
        # RoPE as x * cos + x[perm] * sin_signed: rotate_half(x) = concat(-x2, x1) is a gather of x
        # (perm) with the minus sign folded into the sin table; same products, one op instead of four.
        half = self.head_dim // 2
        sign = np.concatenate([-np.ones(half), np.ones(half)]).astype(np.float32)
        sin = model.freqs_mgr.freqs_sin.asnumpy().astype(np.float32)
        self.freqs_cos = Tensor(model.freqs_mgr.freqs_cos.asnumpy().astype(np.float32))   # [max_pos, d]
        self.freqs_sin = Tensor(sin)
        self.freqs_sin_signed = Tensor(sin * sign)
        self.rotate_perm = Tensor(np.concatenate([np.arange(half, self.head_dim), np.arange(half)]).astype(np.int32))
        self.inv_norm = Tensor(1.0 / np.sqrt(self.head_dim), ms.float32)
        # On CPU a plain float32 head runs as the FloatMatmulNT kernel on the head's own weight: MindSpore's
        # CPU MatMul at M <= 8 costs several times more (docs/generation.md). Elsewhere: the head cell.
        # head_weight: a float16 copy of that weight for the kernel instead (half_head_weight).
        head = lm.lm_head
        self.fast_head = fast_head_ok(lm)
        if head_weight is not None and not self.fast_head:
            raise ValueError(HALF_HEAD_NEEDS)
        if self.fast_head:
            self.head_kernel = float_matmul_nt_cell(head.weight if head_weight is None else head_weight)
        else:
            self.lm_head = head
        self.gather = P.Gather()
        self.bmm_qk = P.BatchMatMul(transpose_b=True)
        self.bmm = P.BatchMatMul()
        self.softmax = P.Softmax()
        self.reduce_sum = P.ReduceSum(keep_dims=True)
        self.cast = P.Cast()
        self._restore_names(lm, names)

    @staticmethod
    def _restore_names(lm, names):
        """Borrowing cells must not rename the model's weights (names: id -> name taken before)."""
        for p in lm.get_parameters():
            if id(p) in names and p.name != names[id(p)]:
                p.name = names[id(p)]

    def _layer_kernels(self, lm, write_cache: bool):
        """One DecodeLayer Cell per layer of lm (fused_layer.py), on the layers' own Parameters."""
        names = {id(p): p.name for p in lm.get_parameters()}
        scale = 1.0 / np.sqrt(self.head_dim)
        kernels = nn.CellList([layer_kernel(layer, scale, self.num_heads, write_cache) for layer in lm.model.layers])
        self._restore_names(lm, names)
        return kernels

    def _layer_ops(self, h, positions, cache):
        """h [B, H] through the L DecodeLayer ops (self.layer_kernels) at positions [B] -> (h [B, H],
        ((k_rot, v) [B, KVH*D] of each layer))."""
        cos = self.gather(self.freqs_cos, positions, 0)                     # [B, d]
        sin = self.gather(self.freqs_sin, positions, 0)
        kvs = ()
        for i, kernel in enumerate(self.layer_kernels):
            h, k_rot, v = kernel(h, cache[2 * i], cache[2 * i + 1], positions, cos, sin)
            kvs += ((k_rot, v),)
        return h, kvs

    def _rope(self, x, cos, sin):
        """x [..., d] * cos + rotate_half(x) * sin, with sin signed (see __init__); cos/sin broadcast."""
        return x * cos + self.gather(x, self.rotate_perm, x.ndim - 1) * sin

    def _qkv(self, layer, x, cos, sin):
        """x [B, T, H] normed -> q [B, heads, T, d], k/v [B, kv_heads, T, d], RoPE applied to q and k."""
        attn = layer.attention
        bsz, t, _ = x.shape
        q = ops.transpose(ops.reshape(self.cast(attn.wq(x), ms.float32), (bsz, t, self.num_heads, self.head_dim)),
                          (0, 2, 1, 3))
        k = ops.transpose(ops.reshape(self.cast(attn.wk(x), ms.float32), (bsz, t, self.kv_heads, self.head_dim)),
                          (0, 2, 1, 3))
        v = ops.transpose(ops.reshape(self.cast(attn.wv(x), ms.float32), (bsz, t, self.kv_heads, self.head_dim)),
                          (0, 2, 1, 3))
        return self._rope(q, cos, sin), self._rope(k, cos, sin), v

    def _merge(self, ctx, bsz, t):
        """[B, kv_heads, n_rep * T, d] (query heads grouped by KV head) -> [B, T, H]."""
        ctx = ops.reshape(ctx, (bsz, self.num_heads, t, self.head_dim))
        return ops.reshape(ops.transpose(ctx, (0, 2, 1, 3)), (bsz, t, self.hidden_size))

    def _block(self, layer, h, attn_out):
        """The rest of a decoder layer after attention: residual (MiniCPM-scaled), RMSNorm, SwiGLU."""
        h = layer.add(h, self.cast(layer.attention.wo(attn_out), ms.float32))
        return layer.add(h, layer.feed_forward(layer.ffn_norm(h)))

    def _logits(self, h_last):
        """h_last [B, H] -> logits [B, V] through the model's final (scaled) norm and head."""
        h = self.norm_out(h_last)
        if self.fast_head:
            return self.head_kernel(self.cast(h, ms.float32))
        return self.cast(self.lm_head(h), ms.float32)


class PrefillGraph(_CachedDecoderBase):
    """Prompt pass: causal attention inside the (right-padded) prompt; returns its K/V for the cache."""

    def construct(self, input_ids, valid_length):
        bsz, t = input_ids.shape
        h = self.cast(self.embed(input_ids), ms.float32)                     # [B, P, H]
        cos = ops.reshape(self.freqs_cos[:t], (1, 1, t, self.head_dim))
        sin = ops.reshape(self.freqs_sin_signed[:t], (1, 1, t, self.head_dim))
        steps = ops.arange(0, t, 1, dtype=ms.int32)
        causal = self.cast(ops.reshape(steps, (1, t)) > ops.reshape(steps, (t, 1)), ms.float32) * MASK_VALUE  # [P, P]
        keys, values = (), ()
        for layer in self.layers:
            q, k, v = self._qkv(layer, layer.attention_norm(h), cos, sin)
            keys += (k,)
            values += (v,)
            q = ops.reshape(q, (bsz, self.kv_heads, self.n_rep * t, self.head_dim))
            score = ops.reshape(self.bmm_qk(q, k) * self.inv_norm, (bsz, self.kv_heads, self.n_rep, t, t))
            probs = self.softmax(score + causal)                              # [B, kvh, rep, P, P]
            ctx = self.bmm(ops.reshape(probs, (bsz, self.kv_heads, self.n_rep * t, t)), v)
            h = self._block(layer, h, self._merge(ctx, bsz, t))
        last = ops.reshape(valid_length - 1, (bsz, 1, 1))
        h_last = ops.gather_elements(h, 1, ops.broadcast_to(last, (bsz, 1, self.hidden_size)))   # [B, 1, H]
        logits = self._logits(ops.reshape(h_last, (bsz, self.hidden_size)))
        return logits, ops.stack(keys), ops.stack(values)


class DecodeStepGraph(_CachedDecoderBase):
    """One new token per row at positions [B]; attends to cache slots < position plus itself.

    Three forms, fastest first (CPU picks the fastest the model allows):
    * fused_layers: each packed decoder layer is one C++ op (`DecodeLayer`, fused_layer.py): the step
      is L + ~5 ops. Needs every layer packed (`convert_model`); default on CPU when they are.
    * fused_attention: RoPE + attention of a layer run as one C++ op (`DecodeAttention`,
      kernels/ops.py) instead of ~20 MindSpore ops; the projections stay the model's cells
      (fake-quant or packed). Default on CPU otherwise.
    * neither: the MindSpore-ops form (any backend). With one token, [B, 1, heads, d] and
      [B, heads, 1, d] share a layout: reshapes, no transposes."""

    def __init__(self, lm, fused_attention: bool = None, fused_layers: bool = None, head_weight=None):
        on_cpu = ms.get_context("device_target") == "CPU"
        reasons = [unfusable_reason(layer) for layer in lm.model.layers]
        if fused_layers is None:
            fused_layers = on_cpu and all(r is None for r in reasons)
        elif fused_layers and any(reasons):
            raise ValueError(f"fused_layers=True but a layer cannot be fused: {next(r for r in reasons if r)}")
        super().__init__(lm, borrow_layers=not fused_layers, head_weight=head_weight)
        self.fused_layers = bool(fused_layers)
        if fused_attention is None:
            fused_attention = on_cpu
        self.fused_attention = bool(fused_attention) and not self.fused_layers
        if self.fused_layers:
            self.layer_kernels = self._layer_kernels(lm, write_cache=False)
        if self.fused_attention:
            self.attention_kernel = decode_attention_cell(1.0 / np.sqrt(self.head_dim), self.num_heads)

    def construct(self, input_ids, positions, *cache):
        h = self.cast(self.embed(input_ids), ms.float32)                     # [B, 1, H]
        if self.fused_layers:
            return self._step_layers(h, positions, cache)
        if self.fused_attention:
            return self._step_fused(h, positions, cache)
        return self._step_ops(h, positions, cache)

    def _step_layers(self, h, positions, cache):
        bsz = h.shape[0]
        h, kvs = self._layer_ops(ops.reshape(h, (bsz, self.hidden_size)), positions, cache)
        new_keys = tuple(ops.reshape(k_rot, (bsz, self.kv_heads, 1, self.head_dim)) for k_rot, _ in kvs)
        new_values = tuple(ops.reshape(v, (bsz, self.kv_heads, 1, self.head_dim)) for _, v in kvs)
        return self._logits(h), ops.stack(new_keys), ops.stack(new_values)

    def _step_fused(self, h, positions, cache):
        bsz = h.shape[0]
        kv = self.kv_heads * self.head_dim
        cos = self.gather(self.freqs_cos, positions, 0)                     # [B, d]
        sin = self.gather(self.freqs_sin, positions, 0)
        new_keys, new_values = (), ()
        for i, layer in enumerate(self.layers):
            attn = layer.attention
            x = layer.attention_norm(h)
            q = ops.reshape(self.cast(attn.wq(x), ms.float32), (bsz, self.hidden_size))
            k = ops.reshape(self.cast(attn.wk(x), ms.float32), (bsz, kv))
            v = ops.reshape(self.cast(attn.wv(x), ms.float32), (bsz, kv))
            ctx, k_rot = self.attention_kernel(q, k, v, cache[2 * i], cache[2 * i + 1], positions, cos, sin)
            new_keys += (ops.reshape(k_rot, (bsz, self.kv_heads, 1, self.head_dim)),)
            new_values += (ops.reshape(v, (bsz, self.kv_heads, 1, self.head_dim)),)
            h = self._block(layer, h, ops.reshape(ctx, (bsz, 1, self.hidden_size)))
        logits = self._logits(ops.reshape(h, (bsz, self.hidden_size)))
        return logits, ops.stack(new_keys), ops.stack(new_values)

    def _step_ops(self, h, positions, cache):
        bsz = h.shape[0]
        seq = cache[0].shape[2]
        kvh, rep, d = self.kv_heads, self.n_rep, self.head_dim
        cos = ops.reshape(self.gather(self.freqs_cos, positions, 0), (bsz, 1, 1, d))
        sin = ops.reshape(self.gather(self.freqs_sin_signed, positions, 0), (bsz, 1, 1, d))
        slots = ops.reshape(ops.arange(0, seq, 1, dtype=ms.int32), (1, seq))
        past = self.cast(slots >= ops.reshape(positions, (bsz, 1)), ms.float32) * MASK_VALUE   # [B, S]
        mask = ops.reshape(ops.concat((past, ops.zeros((bsz, 1), ms.float32)), -1), (bsz, 1, 1, seq + 1))
        new_keys, new_values = (), ()
        for i, layer in enumerate(self.layers):
            k_cache, v_cache = cache[2 * i], cache[2 * i + 1]                 # [B, kvh, S, d]
            attn = layer.attention
            x = layer.attention_norm(h)
            q = self._rope(ops.reshape(self.cast(attn.wq(x), ms.float32), (bsz, kvh, rep, d)), cos, sin)
            k = self._rope(ops.reshape(self.cast(attn.wk(x), ms.float32), (bsz, kvh, 1, d)), cos, sin)
            v = ops.reshape(self.cast(attn.wv(x), ms.float32), (bsz, kvh, 1, d))
            new_keys += (k,)
            new_values += (v,)
            s_past = self.bmm_qk(q, k_cache)                                  # [B, kvh, rep, S]
            s_self = self.reduce_sum(q * k, -1)                               # [B, kvh, rep, 1]
            probs = self.softmax(ops.concat((s_past, s_self), -1) * self.inv_norm + mask)
            p_past, p_self = ops.split(probs, (seq, 1), -1)
            ctx = self.bmm(p_past, v_cache) + p_self * v                      # [B, kvh, rep, d]
            h = self._block(layer, h, ops.reshape(ctx, (bsz, 1, self.hidden_size)))
        logits = self._logits(ops.reshape(h, (bsz, self.hidden_size)))
        return logits, ops.stack(new_keys), ops.stack(new_values)


class DecodeMultiStepGraph(_CachedDecoderBase):
    """`steps` greedy decode steps in one graph call: embed -> L DecodeLayer ops -> head -> argmax, fed
    back in the graph; when the whole model qualifies (fused_model.model_unfusable_reason: a float32
    LLaMA embedding and RMSNorm, the CPU head kernel; whole_model=None picks it), all of that is one
    DecodeModel op and the graph is that op. Why: on small models a step costs more in MindSpore's
    per-call path (Python `Cell.__call__`, graph launch, outputs to numpy, ~L + 6 op launches per token)
    than in its kernels; K steps per call pay it once
    (the multi-step scheduling of serving engines). Greedy only (the argmax is in the graph; sampling
    and the repetition penalty need the host's logits), packed models with fusable layers only (the
    layer op writes the cache in place; fused_layer.py). Tokens past a row's stop are the caller's to
    drop; their steps run at the last cache slot (positions clamped to S - 1), overwriting only slots
    no kept token reads."""

    def __init__(self, lm, steps: int, head_weight=None, whole_model: bool = None):
        if not isinstance(steps, (int, np.integer)) or steps < 2:
            raise ValueError(f"a multi-step decode graph needs steps >= 2, got {steps!r}")
        reasons = [unfusable_reason(layer) for layer in lm.model.layers]
        if any(reasons):
            raise ValueError("multi-step decoding needs every layer as one DecodeLayer op (a packed model): "
                             f"{next(r for r in reasons if r)}")
        super().__init__(lm, borrow_layers=False, head_weight=head_weight)
        self.steps = int(steps)
        model_reason = model_unfusable_reason(lm) if self.fast_head else "the head is not the CPU head kernel"
        if whole_model is None:
            whole_model = model_reason is None
        elif whole_model and model_reason is not None:
            raise ValueError(f"whole_model=True but the model cannot decode as one DecodeModel op: {model_reason}")
        self.whole_model = bool(whole_model)
        if self.whole_model:
            names = {id(p): p.name for p in lm.get_parameters()}
            self.model_kernel = model_kernel(lm, self.steps, self.freqs_cos, self.freqs_sin, head_weight)
            self._restore_names(lm, names)
        else:
            self.layer_kernels = self._layer_kernels(lm, write_cache=True)
            self.argmax = P.Argmax(axis=-1, output_type=ms.int32)

    def construct(self, input_ids, positions, *cache):
        if self.whole_model:
            return self.model_kernel(input_ids, positions, *cache)              # [B, steps]
        bsz = input_ids.shape[0]
        last = cache[0].shape[2] - 1
        ids = input_ids                                                      # [B, 1]
        tokens = ()
        for j in range(self.steps):
            h = ops.reshape(self.cast(self.embed(ids), ms.float32), (bsz, self.hidden_size))   # [B, H]
            h, _ = self._layer_ops(h, ops.minimum(positions + j, last), cache)   # the ops write the cache
            token = self.argmax(self._logits(h))                            # [B]
            tokens += (token,)
            ids = ops.reshape(token, (bsz, 1))
        return ops.stack(tokens, 1)                                         # [B, steps]


class PrefillModelGraph(_CachedDecoderBase):
    """The prompt pass as one PrefillModel op (fused_model.prefill_kernel), for a packed model whose
    whole model qualifies (fused_model.model_unfusable_reason) with the CPU head kernel: the valid tokens
    of every row through the embedding, the layers and the head, the caches written in place. Why: the
    PrefillGraph above is ~30 MindSpore ops per layer plus a host copy of every layer's K/V, and at 2
    threads MindSpore's own workers spin beside the kernels' (docs/generation.md, "Speed")."""

    def __init__(self, lm, head_weight=None):
        super().__init__(lm, borrow_layers=False, head_weight=head_weight)
        reason = model_unfusable_reason(lm) if self.fast_head else "the head is not the CPU head kernel"
        if reason is not None:
            raise ValueError(f"the prompt pass cannot run as one PrefillModel op: {reason}")
        names = {id(p): p.name for p in lm.get_parameters()}
        self.model_kernel = prefill_kernel(lm, self.freqs_cos, self.freqs_sin, head_weight)
        self._restore_names(lm, names)

    def construct(self, input_ids, valid_length, *cache):
        return self.model_kernel(input_ids, valid_length, *cache)          # [B, V]
