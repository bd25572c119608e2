"""Model shapes and training-step builders shared by train_throughput.py, train_vs_torch.py and
train_profile.py.

BitCPMForCausalLM (MiniCPM scalings, optional ternary QAT, optional fused CPU ops) under our
train-step wrapper (global-norm clipping), or under a plain nn.TrainOneStepCell (the "raw loop":
no clipping). The PyTorch form of the same step is benchmarks/torch_train.py (its own process).
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


def ms_step(net, wrapper="ours", fused_optimizer=True, fold_clip=True):
    """A training step Cell over `net`: "ours" = BitCPMTrainOneStepCell (clip 1.0, non-finite
    skip; fused global norm with the fused optimizer), "raw" = nn.TrainOneStepCell (no clipping).
    fused_optimizer: CpuFusedAdamW (the tiny YAML's), else MindFormers' AdamW (same update).
    fold_clip=False: the wrapper scales the gradients itself instead of handing the clip factor
    to CpuFusedAdamW (the step before the fold, for measuring it)."""
    from mindspore import nn
    from mindformers.core.optim.adamw import AdamW
    from bitcpm_ms.training import BitCPMTrainOneStepCell, CpuFusedAdamW
    cls = CpuFusedAdamW if fused_optimizer else AdamW
    opt = cls(net.trainable_params(), learning_rate=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    if not fold_clip:
        opt.takes_grad_scale = False
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
