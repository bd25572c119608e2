"""The one module-swap mechanism: put a new cell where a cell or primitive was, in place.

Every swap of bitcpm-ms goes through `swap_child`: `quantize_model` (Linear -> TernaryLinear),
`convert_model` (TernaryLinear -> PackedTernaryLinear), the Ascend inference swap, the CPU fusions
(`bitcpm_ms/fused`) and the MiniCPM cells of `BitCPMForCausalLM` (ScaledResidualAdd, ScaleOutput).
torchao's `_replace_with_custom_fn_if_matches_filter` is the model for `replace_cells`.

Why a swap carries recompute settings: MindFormers configures recompute while it builds each
decoder layer (`LayerSetting.set_recompute` -> `layer.recompute(...)`; select recompute:
`prim.recompute()` on named primitives). `Cell.recompute` records its state only on the cells and
primitives that exist at that moment (mindspore/nn/cell.py `_recompute`: `_has_config_recompute`
and a `recompute_` prefix on `_scope`; `_recompute_slice_activation` / `_mp_comm_recompute`:
primitive attributes). `inherit_recompute` writes the same state on what is swapped in later.

What that changes in the compiled graph (docs/distributed.md, "Recompute and the swapped cells"):
the full-recompute *scope* of an ordinary sub-cell does not depend on its Python `_scope`: the
graph resolver gives a sub-cell's graph the caller's `recompute_` scope (mindspore ccsrc
parse/resolve.cc, `ConvertObjectToNode` -> `UpdateRecomputeScope`), so swapped TernaryLinear /
quantizer / residual-add nodes were recomputed without it (tests/models/test_recompute.py reads
the compiled graph). What did depend on the swap: primitive attributes (`slice_activation` of a
replaced residual Add, `recompute` of a replaced primitive marked by select recompute) and part
of the nodes of custom-bprop cells (the fused CPU ops: 180 -> 234 recompute-marked nodes in a
2-layer graph once they carry the scope themselves).
"""
from typing import Callable, List, Optional

from mindspore import nn
from mindspore.ops.primitive import Primitive

FilterFn = Callable[[str, nn.Cell], bool]
ReplaceFn = Callable[[str, nn.Cell], nn.Cell]

# Primitive attributes that recompute settings write: `recompute` (Primitive.recompute, select
# recompute and its exclude list), `recompute_comm_op` (mp_comm_recompute, select comm recompute),
# `slice_activation` (recompute_slice_activation).
RECOMPUTE_PRIM_ATTRS = ("recompute", "recompute_comm_op", "slice_activation")
# Of those, the ones `Cell.recompute(**kwargs)` writes on every primitive of the cell.
_CELL_WIDE_ATTRS = ("recompute_comm_op", "slice_activation")


def _primitives(cell: nn.Cell) -> dict:
    """{relative path: primitive} of a cell and its sub-cells (what Cell.recompute's kwargs walk)."""
    out = {}
    for prefix, sub in cell.cells_and_names():
        for name, prim in sub._primitives.items():       # pylint: disable=protected-access
            if prim is not None:
                out[f"{prefix}.{name}" if prefix else name] = prim
    return out


def _set_missing(prims, attrs: dict) -> None:
    for prim in prims:
        for key, value in attrs.items():
            if key not in prim.attrs:
                prim.add_prim_attr(key, value)


def inherit_recompute(old, new: nn.Cell, parent: Optional[nn.Cell] = None) -> None:
    """Give `new` (a cell that took the place of `old`, a cell or primitive, in `parent`) the
    recompute settings `old` had, as MindSpore would have set them had `new` been there when
    recompute was configured.

    * Cell-level: `old.recompute()` called on old itself (it has a `_recompute_cell`) ->
      `new.recompute(output_recompute=...)`; old (or, for a primitive, its parent) inside a
      recomputed cell -> `new._recompute(False, True)`, the call Cell._recompute makes on each
      child: a `recompute_` scope on new and on every sub-cell not yet configured.
    * Primitive attributes (RECOMPUTE_PRIM_ATTRS): a primitive of new at the same relative path
      as one of old's (a different object) gets old's values; attributes Cell.recompute's kwargs
      wrote on all of old's primitives alike go to all of new's that lack them; a replaced
      primitive's own attributes go to every primitive of the cell that replaces it (it computes
      what the primitive computed). Primitives new took over from old keep theirs as they are.
    """
    if not isinstance(new, nn.Cell) or new is old:
        return
    # pylint: disable=protected-access
    if isinstance(old, nn.Cell) and old._recompute_cell is not None and not new._has_config_recompute:
        new.recompute(output_recompute=bool(old.__dict__.get("output_recompute", False)))
    elif (isinstance(old, nn.Cell) and old._has_config_recompute) or \
            (parent is not None and parent._has_config_recompute):
        new._recompute(False, True)
    new_prims = _primitives(new)
    if isinstance(old, Primitive):
        _set_missing(new_prims.values(), {k: old.attrs[k] for k in RECOMPUTE_PRIM_ATTRS if k in old.attrs})
        return
    if not isinstance(old, nn.Cell):
        return
    old_prims = _primitives(old)
    for path, prim in old_prims.items():
        target = new_prims.get(path)
        if target is not None and target is not prim:
            _set_missing([target], {k: prim.attrs[k] for k in RECOMPUTE_PRIM_ATTRS if k in prim.attrs})
    if old._has_config_recompute and old_prims:
        for key in _CELL_WIDE_ATTRS:
            values = [p.attrs[key] for p in old_prims.values() if key in p.attrs]
            if len(values) == len(old_prims) and all(v == values[0] for v in values):
                _set_missing(new_prims.values(), {key: values[0]})


def swap_child(parent: nn.Cell, attr: str, new: nn.Cell):
    """Put `new` in `parent`'s slot `attr` (an attribute, or an index of a CellList /
    SequentialCell) in place of the cell or primitive there, with that one's recompute settings
    (`inherit_recompute`). Returns what was there.

    A primitive replaced by a cell would otherwise stay behind in `parent._primitives` (Cell's
    __setattr__ drops only the instance attribute), where Cell.recompute's kwargs would still
    walk it; it is removed.
    """
    indexed = isinstance(parent, (nn.SequentialCell, nn.CellList)) and attr.isdigit()
    old = parent[int(attr)] if indexed else getattr(parent, attr, None)
    if indexed:
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
        if isinstance(new, nn.Cell):
            parent._primitives.pop(attr, None)           # pylint: disable=protected-access
    inherit_recompute(old, new, parent)
    return old


def replace_cells(net: nn.Cell, filter_fn: FilterFn, replace_fn: ReplaceFn) -> List[str]:
    """Replace every sub-cell `c` named `n` with `filter_fn(n, c)` true by `replace_fn(n, c)`.

    The new cell takes the old one's slot (`swap_child`: attribute or CellList index, recompute
    settings included). Its parameters are then named by their full path (`<name>.<local
    name>`), as a freshly built network would name them: MindSpore renames a cell's parameters
    relative to the parent it is assigned to, so naming happens after the assignment. The root
    itself is never replaced (callers handle a root that is itself the target). Matches are
    collected before anything is replaced, so a replacement is never visited again. Returns the
    replaced names in traversal order.
    """
    cells = dict(net.cells_and_names())
    chosen = [(name, cell) for name, cell in cells.items() if name and filter_fn(name, cell)]
    for name, cell in chosen:
        parent_name, _, attr = name.rpartition(".")
        parent = cells[parent_name] if parent_name else net
        new = replace_fn(name, cell)
        swap_child(parent, attr, new)
        for local, param in new.parameters_and_names():
            param.name = f"{name}.{local}"
    return [name for name, _ in chosen]
