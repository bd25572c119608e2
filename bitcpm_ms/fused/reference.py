"""Plain numpy references of the fused CPU training ops (llm.c style: the spec every kernel is
tested against). Each takes and returns float arrays; computations run in float64 so that the
reference is more accurate than either the fused kernels or MindSpore's op chain.

The forward formulas are MindFormers' LLaMA on CPU (CrossEntropyLoss, LlamaRMSNorm's
non-fused path, LlamaFeedForward with SiLU, LLamaAttention with use_rope_slice and an additive
mask); the backward formulas are their exact gradients.
"""
import numpy as np

from ..data.documents import document_ids


def _f64(*xs):
    return [np.asarray(x, np.float64) for x in xs]


# ---------------------------------------------------------------- cross-entropy
def cross_entropy_forward(logits, labels):
    """logits [N, V], labels [N] -> (loss [N], lse [N]); loss 0 where the label is outside [0, V)."""
    (x,) = _f64(logits)
    labels = np.asarray(labels)
    m = x.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(x - m).sum(axis=1))
    valid = (labels >= 0) & (labels < x.shape[1])
    picked = x[np.arange(len(x)), np.where(valid, labels, 0)] - m[:, 0]
    loss = np.where(valid, log_sum - picked, 0.0)
    return loss, m[:, 0] + log_sum


def cross_entropy_backward(logits, labels, dloss, dlse=None):
    """d(sum(loss * dloss + lse * dlse)) / d logits."""
    (x,) = _f64(logits)
    labels = np.asarray(labels)
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    dloss = np.asarray(dloss, np.float64)
    scale = dloss + (0.0 if dlse is None else np.asarray(dlse, np.float64))
    g = p * scale[:, None]
    valid = (labels >= 0) & (labels < x.shape[1])
    rows = np.arange(len(x))[valid]
    g[rows, labels[valid]] -= dloss[valid]
    return g


def masked_mean_loss(loss, mask):
    """MindFormers' reduction: sum(loss * mask) / (sum(mask) + 1e-8)."""
    loss, mask = _f64(loss, mask)
    return (loss * mask).sum() / (mask.sum() + 1e-8)


# ---------------------------------------------------------------- distillation (CE + KL)
def _lse(x):
    m = x.max(axis=1, keepdims=True)
    return m[:, 0] + np.log(np.exp(x - m).sum(axis=1))


def distill_forward(s, t, labels, temperature):
    """Student / teacher logits [N, V], labels [N] -> (ce [N], kl [N], stats [N, 3]): the per-token
    cross-entropy of s (0 where the label is outside [0, V)), KL(softmax(t/T) || softmax(s/T)), and
    (lse(s), lse(s/T), lse(t/T))."""
    ce, stats = cross_entropy_forward(s, labels)
    s, t = _f64(s, t)
    a, b = s / temperature, t / temperature
    lse_s, lse_t = _lse(a), _lse(b)
    p = np.exp(b - lse_t[:, None])
    kl = (p * ((b - lse_t[:, None]) - (a - lse_s[:, None]))).sum(axis=1)
    return ce, kl, np.stack([stats, lse_s, lse_t], axis=1)


def distill_backward(s, t, labels, temperature, dce, dkl):
    """d(sum(ce * dce + kl * dkl)) / d s; the teacher gets no gradient."""
    s, t, dkl = _f64(s, t, dkl)
    ps = np.exp(s / temperature - _lse(s / temperature)[:, None])
    pt = np.exp(t / temperature - _lse(t / temperature)[:, None])
    return cross_entropy_backward(s, labels, dce) + dkl[:, None] / temperature * (ps - pt)


# ---------------------------------------------------------------- RMSNorm
def rmsnorm_forward(x, w, eps):
    """y = x / sqrt(mean(x^2) + eps) * w over the last axis; returns (y, rstd [rows])."""
    x, w = _f64(x, w)
    rstd = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    return x * rstd * w, rstd[..., 0]


def rmsnorm_backward(x, w, dy, eps):
    """(dx, dw) of sum(rmsnorm(x, w) * dy)."""
    x, w, dy = _f64(x, w, dy)
    rstd = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
    xhat = x * rstd
    gw = dy * w
    dx = rstd * (gw - xhat * (gw * xhat).mean(axis=-1, keepdims=True))
    dw = (dy * xhat).reshape(-1, x.shape[-1]).sum(axis=0)
    return dx, dw


# ---------------------------------------------------------------- SwiGLU
def swiglu_forward(g, u):
    """h = silu(g) * u."""
    g, u = _f64(g, u)
    return g / (1.0 + np.exp(-g)) * u


def swiglu_backward(g, u, dh):
    """(dg, du) of sum(swiglu(g, u) * dh)."""
    g, u, dh = _f64(g, u, dh)
    s = 1.0 / (1.0 + np.exp(-g))
    return dh * u * s * (1.0 + g * (1.0 - s)), dh * g * s


# ---------------------------------------------------------------- attention
def rope(x, cos, sin):
    """x [..., S, D] -> x * cos + concat(-x2, x1) * sin (MindFormers' use_rope_slice rotary)."""
    h = x.shape[-1] // 2
    return x * cos + np.concatenate([-x[..., h:], x[..., :h]], axis=-1) * sin


def rope_backward(g, cos, sin):
    """The transpose of `rope` applied to a gradient g."""
    h = g.shape[-1] // 2
    gs = g * sin
    return g * cos + np.concatenate([gs[..., h:], -gs[..., :h]], axis=-1)


def _heads(x, n, d):
    """[B, S, n*d] -> [B, n, S, d]."""
    b, s, _ = x.shape
    return x.reshape(b, s, n, d).transpose(0, 2, 1, 3)


def attention_forward(q, k, v, cos, sin, mask, num_heads, n_kv_heads):
    """q [B,S,H*D], k/v [B,S,Hkv*D], cos/sin [S,D] or [B,S,D] (per-row positions), mask additive
    [Bm,1,S,S] -> o [B,S,H*D].

    softmax((rope(q) rope(k)^T) / sqrt(D) + mask) v, head h reading kv head h // (H / Hkv)."""
    B, S, HD = np.shape(q)
    p, _, _, vv, _, _ = _attention_probs(q, k, v, cos, sin, mask, num_heads, n_kv_heads)
    return (p @ vv).transpose(0, 2, 1, 3).reshape(B, S, HD)


def _attention_probs(q, k, v, cos, sin, mask, num_heads, n_kv_heads):
    """The forward's shared part in float64: softmax probabilities p [B, H, S, S], rope(q) and
    rope(k) / v repeated to H heads [B, H, S, D], and cos / sin as [Bc, 1, S, D] (Bc 1 or B)."""
    q, k, v, cos, sin, mask = _f64(q, k, v, cos, sin, mask)
    B, S, HD = q.shape
    D = HD // num_heads
    rep = num_heads // n_kv_heads
    cos, sin = cos.reshape(-1, 1, S, D), sin.reshape(-1, 1, S, D)      # [Bc, 1, S, D]: broadcast over heads
    qr = rope(_heads(q, num_heads, D), cos, sin)
    kr = np.repeat(rope(_heads(k, n_kv_heads, D), cos, sin), rep, axis=1)
    vv = np.repeat(_heads(v, n_kv_heads, D), rep, axis=1)
    s = qr @ kr.transpose(0, 1, 3, 2) / np.sqrt(D) + mask.reshape(-1, 1, S, S)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    return p, qr, kr, vv, cos, sin


def attention_backward(q, k, v, cos, sin, mask, num_heads, n_kv_heads, dout):
    """(dq, dk, dv) of sum(attention_forward(...) * dout), in the input layouts."""
    (dout,) = _f64(dout)
    B, S, HD = np.shape(q)
    D = HD // num_heads
    rep = num_heads // n_kv_heads
    scale = 1.0 / np.sqrt(D)
    p, qr, kr, vv, cos, sin = _attention_probs(q, k, v, cos, sin, mask, num_heads, n_kv_heads)
    go = _heads(dout, num_heads, D)
    dvv = p.transpose(0, 1, 3, 2) @ go
    dp = go @ vv.transpose(0, 1, 3, 2)
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) * scale
    dqr = ds @ kr
    dkr = ds.transpose(0, 1, 3, 2) @ qr

    def merge(x, n):       # [B, n*rep or n, S, D] -> [B, S, n*D]
        return x.transpose(0, 2, 1, 3).reshape(B, S, n * D)

    def group(x):          # sum the rep heads of each kv head: [B, H, S, D] -> [B, Hkv, S, D]
        return x.reshape(B, n_kv_heads, rep, S, D).sum(axis=2)

    dq = merge(rope_backward(dqr, cos, sin), num_heads)
    dk = merge(rope_backward(group(dkr), cos, sin), n_kv_heads)
    dv = merge(group(dvv), n_kv_heads)
    return dq, dk, dv


def causal_mask(tokens, pad_token_id=0, dtype=np.float32):
    """MindFormers' LowerTriangularMaskWithDynamic for training: (1 - tril * not_pad(key)) * -10000,
    shape [B, 1, S, S]."""
    tokens = np.asarray(tokens)
    B, S = tokens.shape
    keep = np.tril(np.ones((S, S), dtype))[None] * (tokens != pad_token_id).astype(dtype)[:, None, :]
    return ((1.0 - keep) * -10000.0).astype(dtype)[:, None]


def document_mask(tokens, ends, pad_token_id=0, dtype=np.float32):
    """The mask of packed documents (models/documents.py): causal, within each document only, pad
    keys masked: (1 - tril * same_document * not_pad(key)) * -10000, shape [B, 1, S, S]. `ends`
    [B, K] is the rows' actual_seq_len (data/documents.py)."""
    tokens = np.asarray(tokens)
    B, S = tokens.shape
    doc = document_ids(ends, S)                                                       # [B, S]
    same = (doc[:, :, None] == doc[:, None, :]).astype(dtype)                         # [B, S, S]
    keep = np.tril(np.ones((S, S), dtype))[None] * same * (tokens != pad_token_id).astype(dtype)[:, None, :]
    return ((1.0 - keep) * -10000.0).astype(dtype)[:, None]


# ---------------------------------------------------------------- optimizer and gradient norm
def adamw_update(p, g, m, v, lr, weight_decay, beta1, beta2, eps, step, grad_scale=1.0):
    """MindFormers' AdamW step (decoupled decay, bias correction) on g * grad_scale -> (p', m', v').
    grad_scale is the global-norm clip factor that FusedAdamW applies inside the update."""
    p, g, m, v = _f64(p, g, m, v)
    g = g * float(grad_scale)
    m = m * beta1 + g * (1.0 - beta1)
    v = v * beta2 + g * g * (1.0 - beta2)
    denom = np.sqrt(v / (1.0 - beta2 ** step)) + eps
    return p * (1.0 - lr * weight_decay) - m / denom * (lr / (1.0 - beta1 ** step)), m, v


def sum_squares(x):
    (x,) = _f64(x)
    return float((x * x).sum())
