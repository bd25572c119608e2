"""Model shapes and training-step builders shared by train_throughput.py and train_profile.py.

MindSpore side: BitCPMForCausalLM (MiniCPM scalings, optional ternary QAT, optional fused CPU
ops) under our train-step wrapper (global-norm clipping), or under a plain nn.TrainOneStepCell
(the "raw loop": no clipping). PyTorch side (optional, benchmark only): Hugging Face's
LlamaForCausalLM of the same shape (SDPA attention, F.cross_entropy), AdamW and clip_grad_norm_,
with an absmean ternary BitLinear (groups of g inputs, straight-through estimator) for QAT.
"""
import numpy as np

CONFIGS = {
    # the tiny YAML's model (yaml_configs/bitcpm_tiny_cpu.yaml)
    "tiny": dict(hidden_size=256, num_layers=4, num_heads=4, n_kv_heads=2, intermediate_size=768,
                 vocab_size=8192, seq_length=256, batch_size=8, dim_model_base=64),
    # ~30M parameters (benchmarks/qat_overhead.py's 30m)
    "30m": dict(hidden_size=512, num_layers=8, num_heads=8, n_kv_heads=2, intermediate_size=1536,
                vocab_size=8192, seq_length=256, batch_size=8, dim_model_base=128),
}
MINICPM = dict(scale_emb=12, scale_depth=1.4)
LR, BETAS, EPS, WD, CLIP = 1e-3, (0.9, 0.95), 1e-8, 0.01, 1.0


def tokens_per_step(dims):
    return dims["batch_size"] * dims["seq_length"]


def random_batch(dims, seed=0):
    """[batch, seq + 1] int32 token ids (the model shifts labels itself)."""
    rng = np.random.default_rng(seed)
    return rng.integers(3, dims["vocab_size"], (dims["batch_size"], dims["seq_length"] + 1)).astype(np.int32)


# ---------------------------------------------------------------- MindSpore
def ms_network(dims, qat_group=None, fused=True):
    from bitcpm_ms.models import BitCPMConfig, BitCPMForCausalLM
    qat = {"group_size": qat_group} if qat_group else None
    net = BitCPMForCausalLM(BitCPMConfig(**dims, **MINICPM, qat_config=qat, cpu_fused_ops=fused))
    net.set_train(True)
    return net


def ms_step(net, wrapper="ours", fused_optimizer=True):
    """A training step Cell over `net`: "ours" = BitCPMTrainOneStepCell (clip 1.0, non-finite
    skip; fused global norm with the fused optimizer), "raw" = nn.TrainOneStepCell (no clipping).
    fused_optimizer: CpuFusedAdamW (the tiny YAML's), else MindFormers' AdamW (same update)."""
    from mindspore import nn
    from mindformers.core.optim.adamw import AdamW
    from bitcpm_ms.training import BitCPMTrainOneStepCell, CpuFusedAdamW
    cls = CpuFusedAdamW if fused_optimizer else AdamW
    opt = cls(net.trainable_params(), learning_rate=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    if wrapper == "ours":
        step = BitCPMTrainOneStepCell(net, opt, use_clip_grad=True, max_grad_norm=CLIP, fused_norm=fused_optimizer)
    else:
        step = nn.TrainOneStepCell(net, opt)
    step.set_train(True)
    return step


def ms_runner(step, batch):
    """A no-argument callable running one step and waiting for its loss."""
    import mindspore as ms
    tensor = ms.Tensor(batch)

    def run():
        out = step(tensor)
        loss = out[0] if isinstance(out, tuple) else out
        return float(loss.asnumpy())
    return run


# ---------------------------------------------------------------- PyTorch (optional)
def torch_available():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        return None
    except ImportError as err:
        return f"PyTorch side skipped: {err} (pip install torch==2.13.0 transformers)"


def torch_runner(dims, batch, qat_group=None, threads=None):
    """One PyTorch eager training step of HF LlamaForCausalLM (same shape); returns run()."""
    import torch
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=dims["vocab_size"], hidden_size=dims["hidden_size"],
                      intermediate_size=dims["intermediate_size"], num_hidden_layers=dims["num_layers"],
                      num_attention_heads=dims["num_heads"], num_key_value_heads=dims["n_kv_heads"],
                      max_position_embeddings=dims["seq_length"], rms_norm_eps=1e-6, tie_word_embeddings=False,
                      attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg)
    if qat_group:
        _ternary_linears(model, qat_group)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    ids = torch.from_numpy(batch.astype(np.int64))
    inputs, labels = ids[:, :-1], ids[:, 1:].reshape(-1)

    def run():
        logits = model(input_ids=inputs).logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
        return float(loss.detach())
    return run


def _ternary_linears(model, group):
    """q, k, v, o, gate, up, down -> absmean ternary fake-quant (per group of `group` inputs), STE."""
    import torch

    class BitLinear(torch.nn.Linear):
        def forward(self, x):
            w = self.weight
            wg = w.reshape(w.shape[0], -1, group)
            s = wg.abs().mean(-1, keepdim=True).clamp(min=1e-5)
            wq = (wg / s).round().clamp(-1, 1).mul(s).reshape_as(w)
            return torch.nn.functional.linear(x, w + (wq - w).detach(), self.bias)

    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    for module in list(model.modules()):
        for name in names:
            lin = getattr(module, name, None)
            if isinstance(lin, torch.nn.Linear) and not isinstance(lin, BitLinear):
                new = BitLinear(lin.in_features, lin.out_features, bias=lin.bias is not None)
                new.weight = lin.weight
                new.bias = lin.bias
                setattr(module, name, new)
