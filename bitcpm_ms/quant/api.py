"""`quantize_model`: the one entry point that turns a full-precision network into a QAT network.

torchao style: the model file knows nothing about quantization; this function walks the Cell
tree and swaps the selected MindFormers `Linear` layers for `TernaryLinear`, in place.
"""
import logging
from typing import Callable, Dict, Optional

from mindspore import nn
from mindformers.modules.layers import Linear

from .config import QuantConfig
from .linear import TernaryLinear

logger = logging.getLogger(__name__)

FilterFn = Callable[[str, nn.Cell], bool]


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
    cells: Dict[str, nn.Cell] = dict(net.cells_and_names())
    chosen = [(name, cell) for name, cell in cells.items()
              if name and isinstance(cell, Linear) and not isinstance(cell, TernaryLinear) and select(name, cell)]
    if not chosen:
        raise ValueError(f"quantize_model: no Linear layer matched targets {list(cfg.targets)}; "
                         f"Linear layers present: {[n for n, c in cells.items() if isinstance(c, Linear)][:8]}")
    for name, cell in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = cells[parent_name] if parent_name else net
        try:
            new = TernaryLinear.from_linear(cell, cfg)
        except ValueError as err:
            raise ValueError(f"quantize_model: layer {name!r}: {err}") from None
        setattr(parent, attr, new)
    logger.info("quantize_model: %d layers -> %s (group_size=%s, act_bits=%s)",
                len(chosen), cfg.quant_space, cfg.group_size, cfg.act_bits)
    return net


def quantized_layer_names(net: nn.Cell):
    """Names of the TernaryLinear layers of a network (sorted)."""
    return sorted(name for name, cell in net.cells_and_names() if isinstance(cell, TernaryLinear))
