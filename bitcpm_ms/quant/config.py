"""QuantConfig: what to quantize and how, validated on construction.

One dataclass travels from the YAML `quant:` section to every quantized layer, so a bad value
fails once, at start-up, with a message that names the field, instead of deep inside graph
compilation.
"""
from dataclasses import asdict, dataclass, field, fields
from typing import Optional, Tuple

from ..layout import PROJECTION_NAMES, resolve_group_size

# Quantization spaces of the BitCPM-CANN report, Table 1. Each maps W/s to the nearest level.
QUANT_SPACES = ("ternary", "asym4", "halfsym4", "intsym4", "five")

# Aliases accepted from YAML (the report's own names).
_SPACE_ALIASES = {
    "ternary": "ternary",
    "asym-4-value": "asym4", "asym4": "asym4",
    "half-sym-4-value": "halfsym4", "halfsym4": "halfsym4",
    "int-sym-4-value": "intsym4", "intsym4": "intsym4",
    "5-value": "five", "five": "five", "5value": "five",
}

ACT_BITS = (None, 8, 4)

# Layers quantized by default: the seven projections of every decoder layer (report section
# 3.2: "q, k, v, o, gate, up, down"), named as in MindFormers' LLaMA.
DEFAULT_TARGETS = PROJECTION_NAMES


@dataclass
class QuantConfig:
    """Weight (and optional activation) quantization settings.

    quant_space: one of QUANT_SPACES or the report's names ("ternary", "5-value", ...).
    group_size:  number of consecutive input-dimension weights sharing one scale; -1 means one
                 scale per output row (per channel). Must divide each quantized layer's input width.
    eps:         lower bound of the scale (BitNet uses 1e-5; the report does not state it).
    act_bits:    None (weight-only, as the released models) or 8 / 4 for per-token absmax
                 activation quantization on every quantized linear's input.
    enabled:     False keeps layers exactly full precision (same parameters, no quantizer ops).
    targets:     name suffixes of the Linear cells that `quantize_model` swaps.
    quantize_lm_head: also quantize the output head (the report is silent; BitNet keeps the
                 head and the embeddings in full precision, so the default is False; embeddings
                 are never quantized here).
    fused_cpu_kernel: on CPU, compute the ternary weight quantizer with one fused C++ op
                 (same formula and rounding) instead of MindSpore element-wise ops.
    """
    quant_space: str = "ternary"
    group_size: int = 128
    eps: float = 1e-5
    act_bits: Optional[int] = None
    enabled: bool = True
    targets: Tuple[str, ...] = field(default=DEFAULT_TARGETS)
    quantize_lm_head: bool = False
    fused_cpu_kernel: bool = True

    def __post_init__(self):
        space = _SPACE_ALIASES.get(str(self.quant_space).lower())
        if space is None:
            raise ValueError(f"QuantConfig.quant_space={self.quant_space!r} is not a known quantization "
                             f"space; choose one of {sorted(_SPACE_ALIASES)}")
        self.quant_space = space
        if isinstance(self.group_size, bool) or not isinstance(self.group_size, int):
            raise ValueError(f"QuantConfig.group_size must be an int (-1 or a positive divisor of the "
                             f"input width), got {self.group_size!r}")
        if self.group_size != -1 and self.group_size <= 0:
            raise ValueError(f"QuantConfig.group_size must be -1 (per output row) or positive, "
                             f"got {self.group_size}")
        if not (isinstance(self.eps, (int, float)) and 0 < self.eps < 1):
            raise ValueError(f"QuantConfig.eps must be a small positive float, got {self.eps!r}")
        self.eps = float(self.eps)
        if self.act_bits not in ACT_BITS:
            raise ValueError(f"QuantConfig.act_bits must be one of {ACT_BITS}, got {self.act_bits!r}")
        for name in ("enabled", "quantize_lm_head", "fused_cpu_kernel"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"QuantConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.targets, str):
            self.targets = (self.targets,)
        self.targets = tuple(self.targets)
        if not self.targets or not all(isinstance(t, str) and t for t in self.targets):
            raise ValueError(f"QuantConfig.targets must be a non-empty list of layer-name suffixes, "
                             f"got {self.targets!r}")

    def group_for(self, in_features: int, what: str = "the layer") -> int:
        """Effective group size for a layer with `in_features` inputs; raises if it does not divide."""
        return resolve_group_size(in_features, self.group_size, what)

    @classmethod
    def from_dict(cls, d) -> "QuantConfig":
        """Build from a YAML mapping (MindFormerConfig or dict); unknown keys are errors."""
        if d is None:
            return cls(enabled=False)
        d = dict(d)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown key(s) in the quant section: {unknown}; known keys: {sorted(known)}")
        if "act_bits" in d and isinstance(d["act_bits"], str) and d["act_bits"].lower() in ("none", "null"):
            d["act_bits"] = None
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d
