"""Ascend deployment of a packed model: every PackedTernaryLinear -> CANN's WeightQuantBatchMatmul.

UNVERIFIED: written against MindSpore's and CANN's documented interfaces (bitcpm_ms/kernels/ascend.py)
and never run on an Ascend 910B. On CPU the op has no kernel; the layout it feeds is tested in numpy.
The KV-cache decoder (decoder.py) calls the model's own linear cells, so after this swap the same
prefill / decode-step graphs would run the Ascend matmul (attention stays MindSpore ops).
"""
from typing import List

from ..errors import ConversionError

from ..kernels.ascend import ascend_ternary_linear


def convert_for_ascend(net, compute_dtype=None, allow_a8: bool = False) -> List[str]:
    """Swap every PackedTernaryLinear of `net` (after quant.convert.convert_model) in place for an
    AscendTernaryLinear (A16W4 per-group). W1.58A8 layers are refused unless allow_a8: CANN has no
    per-group int8 x ternary matmul, so they would run weight-only (different numerics).
    Returns the names of the swapped layers."""
    from ..kernels.linear import PackedTernaryLinear
    from ..quant.swap import replace_cells

    def wanted(name, cell):
        if not isinstance(cell, PackedTernaryLinear):
            return False
        if cell.act_bits == 8 and not allow_a8:
            raise ConversionError(f"{name} is W1.58A8; WeightQuantBatchMatmul is weight-only (A16W4). "
                                  "Pass allow_a8=True to run it without activation quantization")
        return True

    return replace_cells(net, wanted, lambda name, cell: ascend_ternary_linear(cell, compute_dtype))
