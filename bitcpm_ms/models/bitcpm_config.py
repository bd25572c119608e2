"""BitCPMConfig: MindFormers' LlamaConfig plus the MiniCPM muP scalings and the QAT settings.

MiniCPM = LLaMA with three scalings (MiniCPM4 report; HF `modeling_minicpm.py`):
  embeddings * scale_emb;  h + branch(h) * scale_depth / sqrt(num_layers);
  logits = lm_head(h / (hidden_size / dim_model_base)).
Defaults reproduce the plain LLaMA forward exactly (scale_emb=1, scale_depth=sqrt(num_layers),
dim_model_base=hidden_size).
"""
import logging
import math

import mindspore as ms
from mindformers.models.llama.llama_config import LlamaConfig
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from .rope import check_rope_scaling

logger = logging.getLogger(__name__)

# Settings MindFormers' LLaMA needs to run on CPU (platform notes): no fused Ascend kernels,
# sliced RoPE, float32 everywhere. The compressed attention mask only works with flash attention.
CPU_SAFE_SETTINGS = {
    "use_flash_attention": False,
    "fused_rms_norm": False,
    "use_rope_slice": True,
    "use_attn_mask_compression": False,
}
_DTYPE_FIELDS = ("compute_dtype", "layernorm_compute_type", "softmax_compute_type", "rotary_dtype",
                 "param_init_type", "residual_dtype", "embedding_init_type")


@MindFormerRegister.register(MindFormerModuleType.CONFIG)
class BitCPMConfig(LlamaConfig):
    """Config of BitCPM (MiniCPM-architecture) causal LMs.

    Extra args:
        scale_emb (float): multiplier of the token embeddings (MiniCPM4: 12).
        scale_depth (float): residual branches are scaled by scale_depth / sqrt(num_layers)
            (MiniCPM4: 1.4). None means sqrt(num_layers), i.e. no scaling.
        dim_model_base (int): logits use h / (hidden_size / dim_model_base) (MiniCPM4: 256).
            None means hidden_size, i.e. no scaling.
        qat_config (dict): the `QuantConfig` fields (the YAML's top-level `quant:` section);
            None or enabled=False trains in full precision.
        cpu_safe (bool or None): force (True) / forbid (False) the CPU-safe settings; None picks
            them when MindSpore's device target is CPU.
        cpu_fused_ops (bool, list or dict): fused CPU training ops to swap in (`bitcpm_ms.fused.
            FusionConfig`: true = all); ignored off CPU. Default off: the unfused model is
            bit-identical to MindFormers' LLaMA, the fused one equal within float32 rounding.
        rope_scaling (dict): Hugging Face's `rope_scaling` (MiniCPM4: `{rope_type: longrope,
            short_factor, long_factor, original_max_position_embeddings}`; see models/rope.py).
            None is plain RoPE.
        use_eod_attn_mask_compression (bool, LlamaConfig's): packed documents; the model then takes
            `actual_seq_len` and keeps attention and RoPE positions inside each document, on CPU
            too, where MindFormers alone refuses it without flash attention (models/documents.py).
    """
    model_type = "bitcpm"

    def __init__(self, scale_emb: float = 1.0, scale_depth: float = None, dim_model_base: int = None,
                 qat_config: dict = None, cpu_safe: bool = None, cpu_fused_ops=False,
                 rope_scaling: dict = None, **kwargs):
        super().__init__(**kwargs)
        self.scale_emb = float(scale_emb)
        self.scale_depth = float(scale_depth) if scale_depth is not None else math.sqrt(self.num_layers)
        self.dim_model_base = int(dim_model_base) if dim_model_base is not None else self.hidden_size
        self.qat_config = dict(qat_config) if qat_config else None
        self.cpu_safe = cpu_safe
        self.cpu_fused_ops = cpu_fused_ops
        self._validate()
        self.rope_scaling = check_rope_scaling(rope_scaling, self.hidden_size // self.num_heads)
        if cpu_safe or (cpu_safe is None and ms.get_context("device_target") == "CPU"):
            self._apply_cpu_safe()

    def _validate(self):
        for name in ("scale_emb", "scale_depth", "dim_model_base"):
            if getattr(self, name) <= 0:
                raise ValueError(f"BitCPMConfig.{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}")
        n_kv = self.n_kv_heads or self.num_heads
        if self.num_heads % n_kv:
            raise ValueError(f"num_heads={self.num_heads} is not divisible by n_kv_heads={n_kv}")
        if getattr(self, "use_eod_attn_mask_compression", False) and getattr(self, "rmsnorm_compute_2d", False):
            raise ValueError("use_eod_attn_mask_compression (packed documents) needs rmsnorm_compute_2d False: the "
                             "packed forward keeps hidden states [batch, seq, hidden] (models/documents.py)")
        if getattr(self, "extend_method", "None") not in (None, "None"):
            raise ValueError(f"extend_method={self.extend_method!r}: BitCPM models extend RoPE with "
                             "rope_scaling (Hugging Face's keys), not MindFormers' extend_method")

    @property
    def residual_scale(self) -> float:
        return self.scale_depth / math.sqrt(self.num_layers)

    @property
    def logit_scale(self) -> float:
        """Factor applied to the final hidden state before the head: dim_model_base / hidden_size."""
        return self.dim_model_base / self.hidden_size

    def _apply_cpu_safe(self):
        changed = {k: v for k, v in CPU_SAFE_SETTINGS.items() if getattr(self, k, None) != v}
        for k, v in CPU_SAFE_SETTINGS.items():
            setattr(self, k, v)
        for name in _DTYPE_FIELDS:
            if getattr(self, name, None) != ms.float32:
                changed[name] = "float32"
                setattr(self, name, ms.float32)
        if changed:
            logger.info("BitCPMConfig: CPU device, using CPU-safe settings %s", changed)
