"""BitCPMForCausalLM: MindFormers' LlamaForCausalLM with the MiniCPM scalings, optionally QAT.

Nothing of LLaMA is rewritten. After the parent builds the network, three small Cells are slotted
in where MiniCPM differs:
  * `model.tok_embeddings` -> ScaleOutput(embedding, scale_emb)
  * each decoder layer's residual `add` primitive -> ScaledResidualAdd (x + branch * c)
  * `model.norm_out` -> ScaleOutput(norm, dim_model_base / hidden_size), so lm_head sees the
    scaled hidden state;
  * with `rope_scaling` (MiniCPM4's LongRoPE), the rotary tables of `model.freqs_mgr`.
Parameter names are restored afterwards, so checkpoints keep MindFormers' LLaMA names and map
1:1 to Hugging Face names. When the config carries a `qat_config`, the constructor ends by
calling the one quantization entry point, `quantize_model`, so that MindFormers' builders (and
`run_mindformer.py`) produce the QAT model from the YAML alone; no layer of the model holds
quantization code. Likewise `cpu_fused_ops` calls the one fusion entry point, `apply_cpu_fusions`
(CPU only; see bitcpm_ms/fused).
"""
from mindspore import Tensor, nn
from mindspore.ops import operations as P
from mindformers.models.llama.llama import LlamaForCausalLM
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..fused import apply_cpu_fusions
from ..quant import QuantConfig, quantize_model
from ..quant.linear import in_strategy
from ..quant.swap import swap_child
from .bitcpm_config import BitCPMConfig
from .rope import rope_tables


class ScaleOutput(nn.Cell):
    """y = cell(x) * scale (a wrapper that keeps the wrapped cell's parameters).

    `strategy` is the wrapped cell's output layout: under semi-auto parallel a primitive without
    one gets MindSpore's batch-parallel default, and the multiply would be redistributed to it and
    back (docs/distributed.md)."""

    def __init__(self, cell: nn.Cell, scale: float, strategy=None):
        super().__init__()
        self.cell = cell
        self.scale = float(scale)
        self.mul = P.Mul()
        if strategy is not None:
            self.mul.shard((strategy, ()))
        if hasattr(cell, "pipeline_stage"):
            self.pipeline_stage = cell.pipeline_stage

    def construct(self, *args):
        return self.mul(self.cell(*args), self.scale)


class ScaledResidualAdd(nn.Cell):
    """Replaces a decoder layer's residual `Add`: add(x, branch) = x + branch * scale."""

    def __init__(self, scale: float, add_strategy=None):
        super().__init__()
        self.scale = float(scale)
        self.mul = P.Mul()
        self.add = P.Add()
        if add_strategy is not None:
            self.add.shard(add_strategy)
            self.mul.shard((add_strategy[1], ()))

    def construct(self, x, branch):
        return self.add(x, self.mul(branch, self.scale))


def embedding_output_strategy(embedding):
    """Layout of LlamaEmbedding's output: Gather(table, ids, axis 0) gives ids' split followed by
    the table's non-vocabulary split. None when the Gather has no strategy (stand-alone, DP)."""
    strategy = in_strategy(embedding.gather)
    return None if strategy is None else tuple(strategy[1]) + tuple(strategy[0][1:])


def norm_output_strategy(norm):
    """Layout of LlamaRMSNorm's output = its input's split (fused RmsNorm or the mul chain)."""
    for name in ("norm", "mul2"):
        prim = getattr(norm, name, None)
        strategy = in_strategy(prim) if prim is not None else None
        if strategy is not None:
            return tuple(strategy[0])
    return None


def install_rope_tables(freqs_mgr, config: BitCPMConfig):
    """Replace MindFormers' FreqsMgr cos/sin tables with the config's (LongRoPE, models/rope.py).

    Every consumer reads these two tensors: the training / eval graph (FreqsMgr's slices), the fused
    CPU attention (it receives them as freqs_cis), the KV-cache decoders and their MindIR export."""
    head_dim = config.hidden_size // config.num_heads
    rows = int(freqs_mgr.freqs_cos.shape[0])
    cos, sin = rope_tables(head_dim, rows, config.theta, config.rope_scaling, config.max_position_embedding)
    dtype = freqs_mgr.freqs_cos.dtype
    freqs_mgr.freqs_cos = Tensor(cos, dtype=dtype)
    freqs_mgr.freqs_sin = Tensor(sin, dtype=dtype)


@MindFormerRegister.register(MindFormerModuleType.MODELS)
class BitCPMForCausalLM(LlamaForCausalLM):
    """MiniCPM-architecture causal LM on MindFormers' LLaMA; ternary QAT when `qat_config` enables it."""
    config_class = BitCPMConfig

    def __init__(self, config: BitCPMConfig = None):
        if not isinstance(config, BitCPMConfig):
            raise TypeError(f"BitCPMForCausalLM needs a BitCPMConfig, got {type(config).__name__}")
        super().__init__(config=config)   # by keyword: MindFormers' @lazy_inline reads kwargs["config"]
        names = {id(p): p.name for p in self.get_parameters()}
        model = self.model
        if config.rope_scaling:
            install_rope_tables(model.freqs_mgr, config)
        # every swap goes through swap_child: the new cell keeps the recompute settings
        # MindFormers gave the replaced one while building the layers (quant/swap.py)
        if config.scale_emb != 1.0:
            swap_child(model, "tok_embeddings", ScaleOutput(model.tok_embeddings, config.scale_emb,
                                                            embedding_output_strategy(model.tok_embeddings)))
        if config.residual_scale != 1.0:
            for layer in model.layers:
                swap_child(layer, "add", ScaledResidualAdd(config.residual_scale, in_strategy(layer.add)))
        if config.logit_scale != 1.0:
            swap_child(model, "norm_out", ScaleOutput(model.norm_out, config.logit_scale,
                                                      norm_output_strategy(model.norm_out)))
        if config.qat_config:
            quantize_model(self, QuantConfig.from_dict(config.qat_config))
        if getattr(config, "cpu_fused_ops", False):
            apply_cpu_fusions(self, config.cpu_fused_ops)
        for p in self.get_parameters():      # keep LLaMA's checkpoint names
            if id(p) in names and p.name != names[id(p)]:
                p.name = names[id(p)]
