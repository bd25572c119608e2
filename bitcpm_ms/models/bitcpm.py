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

Packed documents (`use_eod_attn_mask_compression: True`, MindFormers' switch, with the
`actual_seq_len` input): the forward rebuilds, from each row's document ends, RoPE positions that
restart in every document and attention that stays inside it (models/documents.py), then runs
MindFormers' own embedding, decoder layers and norm. With flash attention (Ascend) the layers are
MindFormers' TND flash attention (`actual_seq_qlen/kvlen`); without it (CPU), where MindFormers
refuses the switch, the layers are built without it and get a dense document mask, and the fused
CPU attention takes the same mask and per-row positions. The loss of a token whose label starts
another document is masked. With the switch off nothing of this is built or run.
"""
from mindspore import Tensor, nn
from mindspore.common import dtype as mstype
from mindspore.ops import operations as P
from mindformers.models.llama.llama import LlamaForCausalLM
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister
from mindspore.context import ParallelMode
from mindspore.parallel._utils import _get_parallel_mode

from ..fused import apply_cpu_fusions
from ..quant import QuantConfig, quantize_model
from ..quant.linear import in_strategy
from ..quant.swap import swap_child
from .bitcpm_config import BitCPMConfig
from .documents import DocumentLayout, eos_ids
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
        documents = bool(getattr(config, "use_eod_attn_mask_compression", False))
        tnd = documents and bool(config.use_flash_attention)
        try:
            # without flash attention MindFormers refuses the switch; the layers are then built
            # plainly and get the dense document mask (the config keeps the user's value)
            config.use_eod_attn_mask_compression = tnd
            super().__init__(config=config)   # by keyword: MindFormers' @lazy_inline reads kwargs["config"]
        finally:
            config.use_eod_attn_mask_compression = documents
        self.document_mask = documents
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
        self.documents = document_layout(config, tnd) if documents else None
        if config.qat_config:
            quantize_model(self, QuantConfig.from_dict(config.qat_config))
        if getattr(config, "cpu_fused_ops", False):
            apply_cpu_fusions(self, config.cpu_fused_ops)
        for p in self.get_parameters():      # keep LLaMA's checkpoint names
            if id(p) in names and p.name != names[id(p)]:
                p.name = names[id(p)]

    # ------------------------------------------------------------ packed documents
    def construct(self, input_ids, labels=None, input_position=None, position_ids=None, attention_mask=None,
                  input_embeds=None, init_reset=None, batch_valid_length=None, batch_index=None, zactivate_len=None,
                  block_tables=None, slot_mapping=None, prefix_keys_values=None, llm_boost_inputs=None,
                  q_seq_lens=None, loss_mask=None, gather_index=None, seq_range=None, actual_seq_len=None):
        """LlamaForCausalLM's forward; with document masking on and `actual_seq_len` given, the packed
        one (`document_forward`). In training the switch needs `actual_seq_len` (ValueError: graph
        mode raises built-in exceptions only); outside training a row without it is one document."""
        if self.document_mask and actual_seq_len is not None:
            return self.document_forward(input_ids, actual_seq_len)
        if self.document_mask and self.training:
            raise ValueError("use_eod_attn_mask_compression is on but no actual_seq_len was given: feed the "
                             "dataset's actual_seq_len column (input_columns), or switch document masking off")
        return super().construct(input_ids, labels, input_position, position_ids, attention_mask, input_embeds,
                                 init_reset, batch_valid_length, batch_index, zactivate_len, block_tables,
                                 slot_mapping, prefix_keys_values, llm_boost_inputs, q_seq_lens, loss_mask,
                                 gather_index, seq_range, actual_seq_len)

    def document_hidden(self, tokens, actual_seq_len):
        """Final hidden states [B, S, H] of `tokens` [B, S] whose documents end at `actual_seq_len`
        [B, K], and the loss keep [B, S] (models/documents.py). LlamaModel's training forward
        (embedding, layers, norm), with the document layout's positions, mask and ends."""
        model = self.model
        bs, seq = self.shape(tokens)
        freqs, mask, flat_ends, keep = self.documents(tokens, actual_seq_len, model.freqs_mgr.freqs_cos,
                                                      model.freqs_mgr.freqs_sin)
        freqs_cis = (freqs[0], freqs[1], model.freqs_mgr.swap_mask)
        if mask is None:                            # TND flash attention: MindFormers' compressed mask
            mask = model.casual_mask()
        h = self.cast(model.tok_embeddings(tokens), model.dtype)
        h = self.reshape(h, (bs, seq, model.hidden_size))                      # [B, S, H]
        for i in range(model.num_layers):
            h = model.layers[i](h, freqs_cis, mask, actual_seq_len=flat_ends)
        return model.norm_out(h), keep

    def document_forward(self, input_ids, actual_seq_len):
        """The packed forward: in training `input_ids` [B, S + 1] -> the mean loss over the kept
        labels; otherwise `input_ids` [B, S] -> (logits, tokens, input_mask) as LlamaForCausalLM."""
        bsz, seqlen = self.shape(input_ids)
        tokens = self.slice(input_ids, (0, 0), (bsz, seqlen - 1), (1, 1)) if self.training else input_ids
        hidden, keep = self.document_hidden(tokens, actual_seq_len)
        logits = self.lm_head(hidden)
        input_mask = self.mul(self.cast(self.not_equal(tokens, self.pad_token_id), mstype.float32), keep)
        if not self.training:
            return self.cast(logits, mstype.float32), tokens, input_mask
        labels = self.slice(input_ids, (0, 1), (bsz, seqlen), (1, 1))
        logits = self.cast(self.reshape(logits, (-1, logits.shape[-1])), mstype.float32)   # [B*S, V]
        return self.loss(logits, self.reshape(labels, (-1,)), self.reshape(input_mask, (-1,)))


def document_layout(config, tnd: bool) -> DocumentLayout:
    """The DocumentLayout of a model with document masking on (None is built with it off)."""
    parallel = _get_parallel_mode() in (ParallelMode.SEMI_AUTO_PARALLEL, ParallelMode.AUTO_PARALLEL)
    layout = DocumentLayout(config.seq_length, config.hidden_size // config.num_heads, eos_ids(config),
                            config.pad_token_id, tnd=tnd,
                            data_parallel=int(config.parallel_config.data_parallel) if parallel else 1)
    if parallel:
        layout.shard()
    return layout
