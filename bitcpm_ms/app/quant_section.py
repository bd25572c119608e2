"""The `quant:` section of a config, validated and copied into the model's config.

Its own module because config loading, GGUF export and HF export all need it, and none of them
should import the others for it.
"""
from mindformers.tools.register import MindFormerConfig

from ..errors import ConfigError
from ..parallel import check_tp_divisibility
from ..quant import QuantConfig


def sync_quant_section(config: MindFormerConfig) -> QuantConfig:
    """Validate `quant:` and make model.model_config.qat_config equal to it (overrides included).

    The group size must divide every quantized projection's input width on each tensor-parallel
    rank (`parallel.check_tp_divisibility`; with model_parallel 1 that is the plain widths)."""
    try:
        qcfg = QuantConfig.from_dict(config.get("quant"))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"quant section: {err}") from None
    if qcfg.enabled and config.model.model_config.get("hidden_size"):
        mp = int((config.get("parallel_config") or {}).get("model_parallel") or 1)
        problems = check_tp_divisibility(config.model.model_config, mp, qcfg.group_size)
        if problems:
            raise ConfigError("; ".join(problems))
    config.model.model_config.qat_config = MindFormerConfig(**qcfg.to_dict())
    return qcfg
