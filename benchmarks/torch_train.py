"""PyTorch side of benchmarks.train_vs_torch: the same MiniCPM training step in PyTorch, as a worker.

Runs under an interpreter with torch (here /work/refenv/bin/python; torch is not a dependency of
bitcpm-ms) and imports neither bitcpm_ms nor mindspore:

    /work/refenv/bin/python -m benchmarks.torch_train --dims '{"hidden_size": 256, ...}' --precision qat \
        --threads 2 [--compile] [--warmup 3]          # then "run N" / "quit" on stdin (step_worker.py)

Why written out instead of Hugging Face's LlamaForCausalLM: HF's Llama has none of the MiniCPM
scalings, and this is the strongest plain-eager form of the step (no HF mask building or output
objects): the baseline should be as fast as PyTorch eager gets. The math is that of
bitcpm_ms/models/reference.py and of our BitCPMForCausalLM:
    h = embed[ids] * scale_emb
    per layer: h += attn(rms(h)) * scale_depth / sqrt(L);  h += mlp(rms(h)) * scale_depth / sqrt(L)
    attn: rotate-half RoPE (theta 10000), GQA (repeat_kv as HF), causal SDPA; mlp: down(silu(gate) * up)
    logits = lm_head(rms(h) / (hidden / dim_model_base)), untied head, rms eps 1e-5
    loss = F.cross_entropy; clip_grad_norm_(1.0), the update skipped when the norm is not finite (as
    our wrapper); AdamW(fused=True), lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.01 on all.
QAT ("qat"): q, k, v, o, gate, up, down use our quantizer's math, s = max(mean|W_group|, 1e-5) per
group of 64 inputs, W_q = clamp(round(W / s), -1, 1) * s, straight-through gradient (the forward
sees W_q, the backward is the identity); embeddings and head full precision.
"""
import argparse
import json
import math
import os
import platform

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.step_worker import emit, serve

LR, BETAS, EPS, WD, CLIP, QEPS = 1e-3, (0.9, 0.95), 1e-8, 0.01, 1.0, 1e-5


class TernaryLinear(nn.Linear):
    """nn.Linear whose forward uses the absmean ternary weight; straight-through backward."""

    def __init__(self, n_in, n_out, group):
        super().__init__(n_in, n_out, bias=False)
        self.group = group

    def forward(self, x):
        w = self.weight
        wg = w.reshape(w.shape[0], -1, self.group)
        s = wg.abs().mean(-1, keepdim=True).clamp(min=QEPS)
        wq = ((wg / s).round().clamp(-1, 1) * s).reshape_as(w)
        return F.linear(x, w + (wq - w).detach())


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Block(nn.Module):
    def __init__(self, d, linear):
        super().__init__()
        h, self.heads, self.kv = d["hidden_size"], d["num_heads"], d["n_kv_heads"]
        self.hd = h // self.heads
        self.q, self.k = linear(h, h), linear(h, self.kv * self.hd)
        self.v, self.o = linear(h, self.kv * self.hd), linear(h, h)
        f = d["intermediate_size"]
        self.gate, self.up, self.down = linear(h, f), linear(h, f), linear(f, h)
        self.n1, self.n2 = RMSNorm(h, 1e-5), RMSNorm(h, 1e-5)
        self.res = d["scale_depth"] / math.sqrt(d["num_layers"])

    def forward(self, h, cos, sin):
        b, s, _ = h.shape
        x = self.n1(h)
        q = self.q(x).view(b, s, self.heads, self.hd).transpose(1, 2)
        k = self.k(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        v = self.v(x).view(b, s, self.kv, self.hd).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        rep = self.heads // self.kv
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + self.o(a.transpose(1, 2).reshape(b, s, -1)) * self.res
        x = self.n2(h)
        return h + self.down(F.silu(self.gate(x)) * self.up(x)) * self.res


class MiniCPM(nn.Module):
    def __init__(self, d, group=None):
        super().__init__()
        def linear(i, o):
            return TernaryLinear(i, o, group) if group else nn.Linear(i, o, bias=False)
        h = d["hidden_size"]
        self.embed = nn.Embedding(d["vocab_size"], h)
        self.layers = nn.ModuleList(Block(d, linear) for _ in range(d["num_layers"]))
        self.norm = RMSNorm(h, 1e-5)
        self.head = nn.Linear(h, d["vocab_size"], bias=False)
        self.scale_emb, self.logit_div = d["scale_emb"], h / d["dim_model_base"]
        hd = h // d["num_heads"]
        inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        ang = torch.outer(torch.arange(d["seq_length"], dtype=torch.float32), inv)
        emb = torch.cat((ang, ang), dim=-1)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, ids, labels):
        h = self.embed(ids) * self.scale_emb
        for layer in self.layers:
            h = layer(h, self.cos, self.sin)
        logits = self.head(self.norm(h) / self.logit_div)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def build_step(dims, precision, compile_model=False, seed=0):
    """A no-argument callable running one training step and returning its loss (a float)."""
    torch.manual_seed(seed)
    model = MiniCPM(dims, 64 if precision == "qat" else None)
    model.train()
    forward = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD, fused=True)
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(rng.integers(3, dims["vocab_size"], (dims["batch_size"], dims["seq_length"] + 1)))
    inputs, labels = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    params = [p for p in model.parameters()]

    def step():
        loss = forward(inputs, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, CLIP, foreach=True)
        if torch.isfinite(norm):
            opt.step()
        return float(loss.detach())
    return step


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", required=True, help="JSON: the shape (benchmarks.bench_models.CONFIGS) + scalings")
    ap.add_argument("--precision", choices=("fp", "qat"), default="fp")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(1)
    info = {"side": "torch.compile" if args.compile else "torch eager", "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "mkldnn": torch.backends.mkldnn.is_available(), "mkl": torch.backends.mkl.is_available(),
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                   "OMP_WAIT_POLICY")}}
    try:
        serve(build_step(json.loads(args.dims), args.precision, args.compile), info, args.warmup)
    except Exception as err:            # said on the protocol channel, so the parent reports it
        emit({"error": f"{type(err).__name__}: {err}"})
        raise


if __name__ == "__main__":
    main()
