"""swap_child / replace_cells: a swapped-in cell gets the recompute settings of what it replaced,
as MindSpore's Cell.recompute would have set them had it been there (quant/swap.py)."""
from mindspore import nn
from mindspore.ops import operations as P

from bitcpm_ms.quant.swap import inherit_recompute, replace_cells, swap_child


class _Leaf(nn.Cell):
    def __init__(self):
        super().__init__()
        self.mul = P.Mul()
        self.relu = P.ReLU()

    def construct(self, x):
        return self.relu(self.mul(x, 2.0))


class _Block(nn.Cell):
    def __init__(self):
        super().__init__()
        self.leaf = _Leaf()
        self.add = P.Add()

    def construct(self, x):
        return self.add(x, self.leaf(x))


class _AddCell(nn.Cell):
    def __init__(self):
        super().__init__()
        self.mul = P.Mul()
        self.add = P.Add()

    def construct(self, x, y):
        return self.add(x, self.mul(y, 0.5))


def _scoped(cell):
    return bool(cell._has_config_recompute) and (cell._scope or "").startswith("recompute_")


def test_cell_swapped_into_a_recomputed_block_gets_its_scope_and_kwarg_attributes():
    block = _Block()
    block.recompute(recompute_slice_activation=True, mp_comm_recompute=False)
    new = _Leaf()
    assert not _scoped(new)
    old = swap_child(block, "leaf", new)
    assert old is not new and block.leaf is new
    assert _scoped(new)
    assert new._recompute_cell is None                   # a child, not a recompute root
    for prim in (new.mul, new.relu):
        assert prim.attrs["slice_activation"] is True
        assert prim.attrs["recompute_comm_op"] is False


def test_primitive_replaced_by_a_cell_passes_its_attributes_and_leaves_no_stale_entry():
    block = _Block()
    block.recompute(recompute_slice_activation=True)
    block.add.recompute(False)                            # e.g. select_recompute_exclude
    swap_child(block, "add", _AddCell())
    assert "add" not in block._primitives and isinstance(block.add, _AddCell)
    assert _scoped(block.add)
    for prim in (block.add.add, block.add.mul):
        assert prim.attrs["slice_activation"] is True
        assert prim.attrs["recompute"] is False


def test_root_recompute_and_select_recompute_targets_follow_the_swap():
    block = _Block()
    block.leaf.recompute(output_recompute=False)         # select recompute naming a cell
    block.leaf.mul.recompute()                            # ... and a primitive inside it
    new = _Leaf()
    swap_child(block, "leaf", new)
    assert new._recompute_cell is not None and _scoped(new)
    assert new.mul.attrs["recompute"] is True
    assert "recompute" not in new.relu.attrs
    assert not _scoped(block)                             # nothing above the swapped cell changes


def test_nothing_is_set_without_recompute():
    block = _Block()
    swap_child(block, "leaf", _Leaf())
    swap_child(block, "add", _AddCell())
    for _, cell in block.cells_and_names():
        assert not cell._has_config_recompute and not (cell._scope or "").startswith("recompute_")
        for prim in cell._primitives.values():
            assert not set(prim.attrs) & {"recompute", "slice_activation", "recompute_comm_op"}


def test_shared_primitives_keep_their_own_values():
    """A wrapper that takes over the old cell's primitive keeps that primitive's setting, even
    where the other primitives differ (no cell-wide value is forced on it)."""
    block = _Block()
    block.recompute(recompute_slice_activation=False)
    block.leaf.relu.add_prim_attr("slice_activation", True)
    wrapper = _Leaf()
    wrapper.relu = block.leaf.relu
    inherit_recompute(block.leaf, wrapper, block)
    assert wrapper.relu.attrs["slice_activation"] is True
    assert wrapper.mul.attrs["slice_activation"] is False    # path-based: old leaf.mul's value


def test_replace_cells_in_a_cell_list_names_parameters_and_inherits():
    class _Lin(nn.Cell):
        def __init__(self):
            super().__init__()
            self.dense = nn.Dense(2, 2)

        def construct(self, x):
            return self.dense(x)

    net = nn.CellList([_Lin(), _Lin()])
    net.recompute()
    names = replace_cells(net, lambda n, c: isinstance(c, nn.Dense), lambda n, c: nn.Dense(2, 2))
    assert names == ["0.dense", "1.dense"]
    assert sorted(p.name for p in net.get_parameters()) == ["0.dense.bias", "0.dense.weight",
                                                             "1.dense.bias", "1.dense.weight"]
    assert _scoped(net[0].dense) and _scoped(net[1].dense)
