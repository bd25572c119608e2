"""`quantize_model`: the one entry point that turns a full-precision network into a QAT network.

torchao style: the layers of the model hold no quantization code; this function walks the Cell
tree and swaps the selected MindFormers `Linear` layers for `TernaryLinear`, in place (through
`swap.replace_cells`). `BitCPMForCausalLM` calls it as the last step of its constructor when its
config carries a `qat_config`, so that MindFormers' builders (and `run_mindformer.py`) produce the
QAT model from the YAML alone; any other MindFormers network can be passed to it directly.
"""
import logging
from typing import Optional

from mindspore import nn
from mindformers.modules.layers import Linear

from .config import QuantConfig
from .linear import TernaryLinear
from .swap import FilterFn, replace_cells

logger = logging.getLogger(__name__)


def default_filter(cfg: QuantConfig) -> FilterFn:
    """Select the q/k/v/o/gate/up/down projections (cfg.targets), and the head if asked."""
    def select(name: str, cell: nn.Cell) -> bool:
        if name == "lm_head" or name.endswith(".lm_head"):
            return cfg.quantize_lm_head
        return any(name == t or name.endswith("." + t) for t in cfg.targets)
    return select


def quantize_model(net: nn.Cell, cfg: QuantConfig, filter_fn: Optional[FilterFn] = None) -> nn.Cell:
    """Swap every selected Linear of `net` for a TernaryLinear sharing its parameters; returns `net`.

    filter_fn(name, cell) -> bool picks the layers (default: `default_filter(cfg)`).
    With cfg.enabled False nothing is swapped: the network stays exactly full precision.
    Raises ValueError if nothing matched (a mistyped target list would otherwise silently train
    a full-precision model) or if a selected layer's width is not divisible by the group size.
    """
    if not cfg.enabled:
        logger.info("quantization disabled: model left in full precision")
        return net
    select = filter_fn or default_filter(cfg)

    def wanted(name: str, cell: nn.Cell) -> bool:
        return isinstance(cell, Linear) and not isinstance(cell, TernaryLinear) and select(name, cell)

    def swap(name: str, cell: Linear) -> TernaryLinear:
        try:
            return TernaryLinear.from_linear(cell, cfg)
        except ValueError as err:
            raise ValueError(f"quantize_model: layer {name!r}: {err}") from None

    chosen = replace_cells(net, wanted, swap)
    if not chosen:
        linears = [n for n, c in net.cells_and_names() if isinstance(c, Linear)]
        raise ValueError(f"quantize_model: no Linear layer matched targets {list(cfg.targets)}; "
                         f"Linear layers present: {linears[:8]}")
    logger.info("quantize_model: %d layers -> %s (group_size=%s, act_bits=%s)",
                len(chosen), cfg.quant_space, cfg.group_size, cfg.act_bits)
    return net


def quantized_layer_names(net: nn.Cell):
    """Names of the TernaryLinear layers of a network (sorted)."""
    return sorted(name for name, cell in net.cells_and_names() if isinstance(cell, TernaryLinear))
