"""FusionConfig: which fused CPU training ops `apply_cpu_fusions` swaps into a network.

YAML: ``model.model_config.cpu_fused_ops`` is ``true`` (every fusion), ``false`` / null (none), a
list of names (``[cross_entropy, attention]``) or a mapping (``{attention: false}``: every fusion
but the ones set false).
"""
from dataclasses import dataclass, fields

from ..errors import ConfigError


@dataclass(frozen=True)
class FusionConfig:
    cross_entropy: bool = True   # log-softmax + NLL over the vocabulary, one pass each way
    attention: bool = True       # rotary embedding + GQA scores + mask + softmax + weighted values
    rms_norm: bool = True        # RMSNorm forward / backward (dx and dweight)
    swiglu: bool = True          # silu(gate) * up
    matmul: bool = True          # every Linear's x W^T and its two gradient matmuls via OpenBLAS sgemm

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]

    @classmethod
    def none(cls) -> "FusionConfig":
        return cls(**{n: False for n in cls.names()})

    @classmethod
    def from_value(cls, value) -> "FusionConfig":
        """From the YAML value (see the module docstring); bad names raise ConfigError."""
        if isinstance(value, FusionConfig):
            return value
        if value is None or value is False:
            return cls.none()
        if value is True:
            return cls()
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            unknown = sorted(set(map(str, value)) - set(cls.names()))
            if unknown:
                raise ConfigError(f"cpu_fused_ops: unknown fusion(s) {unknown}; choose from {cls.names()}")
            return cls(**{n: n in value for n in cls.names()})
        if hasattr(value, "items"):
            unknown = sorted(set(map(str, value)) - set(cls.names()))
            if unknown:
                raise ConfigError(f"cpu_fused_ops: unknown fusion(s) {unknown}; choose from {cls.names()}")
            bad = {k: v for k, v in value.items() if not isinstance(v, bool)}
            if bad:
                raise ConfigError(f"cpu_fused_ops: values must be true or false, got {bad}")
            return cls(**{n: value.get(n, True) for n in cls.names()})
        raise ConfigError(f"cpu_fused_ops must be true, false, a list of fusions or a mapping, got {value!r}")

    def enabled(self):
        return [n for n in self.names() if getattr(self, n)]
