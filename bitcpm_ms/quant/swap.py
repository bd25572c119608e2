"""The one module-swap mechanism: replace the cells of a network that match a filter, in place.

Both `quantize_model` (Linear -> TernaryLinear) and `convert_model` (TernaryLinear ->
PackedTernaryLinear) use it; torchao's `_replace_with_custom_fn_if_matches_filter` is the model.
"""
from typing import Callable, List

from mindspore import nn

FilterFn = Callable[[str, nn.Cell], bool]
ReplaceFn = Callable[[str, nn.Cell], nn.Cell]


def replace_cells(net: nn.Cell, filter_fn: FilterFn, replace_fn: ReplaceFn) -> List[str]:
    """Replace every sub-cell `c` named `n` with `filter_fn(n, c)` true by `replace_fn(n, c)`.

    The new cell takes the old one's slot: an attribute of its parent, or an index of a
    `CellList` / `SequentialCell`. Its parameters are then named by their full path
    (`<name>.<local name>`), as a freshly built network would name them: MindSpore renames a
    cell's parameters relative to the parent it is assigned to, so naming happens after the
    assignment. The root itself is never replaced (callers handle a root that is itself the
    target). Matches are collected before anything is replaced, so a replacement is never
    visited again. Returns the replaced names in traversal order.
    """
    cells = dict(net.cells_and_names())
    chosen = [(name, cell) for name, cell in cells.items() if name and filter_fn(name, cell)]
    for name, cell in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = cells[parent_name] if parent_name else net
        new = replace_fn(name, cell)
        if isinstance(parent, (nn.SequentialCell, nn.CellList)) and attr.isdigit():
            parent[int(attr)] = new
        else:
            setattr(parent, attr, new)
        for local, param in new.parameters_and_names():
            param.name = f"{name}.{local}"
    return [name for name, _ in chosen]
