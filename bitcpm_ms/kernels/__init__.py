"""Packed 2-bit ternary weights and the fused ternary quant-matmul (C++ AOT op for MindSpore on CPU).

    from bitcpm_ms.kernels import pack_ternary, unpack_ternary, ternary_matmul
    p = pack_ternary(codes, scales, group_size)      # codes int8 [out,in] in {-1,0,1}
    y = ternary_matmul(x, p)                          # weight-only, x float32 [..., in]
    y = ternary_matmul(x, p, act_bits=8)              # W1.58A8 (per-token int8 activations)
    y = ternary_matmul(x, p, act_bits=8, eps=cfg.eps) # ... activation quantizer floor of training

See docs/kernels.md for the packed layout, build/cache details and benchmarks.
"""
from .packing import (PackedTernary, bits_per_weight, bits_per_weight_report, format_bits_report, pack_ternary,
                      unpack_ternary)
from .reference import quantize_activations_int8, ternary_matmul_dx_reference, ternary_matmul_reference
from .library import (MAX_ISA_AVX2, MAX_ISA_BEST, get_force_portable, get_max_isa, get_num_threads, has_avx2,
                  get_spin_us, has_avx512_vnni, isa_path, portable_path, quantize_pack_numpy, set_force_portable,
                  set_max_isa, set_num_threads, set_spin_us, ternary_matmul_dx_numpy, ternary_matmul_numpy)
from .api import ternary_matmul
from .build import KernelBuildError, library_path

__all__ = [
    "PackedTernary", "pack_ternary", "unpack_ternary", "bits_per_weight", "bits_per_weight_report",
    "format_bits_report", "ternary_matmul", "ternary_matmul_reference", "ternary_matmul_dx_reference",
    "quantize_activations_int8", "ternary_matmul_numpy", "ternary_matmul_dx_numpy", "get_ms_op",
    "set_num_threads", "get_num_threads", "set_spin_us", "get_spin_us", "set_force_portable", "get_force_portable",
    "portable_path",
    "set_max_isa", "get_max_isa", "isa_path", "MAX_ISA_BEST", "MAX_ISA_AVX2", "has_avx2", "has_avx512_vnni",
    "quantize_pack_numpy", "KernelBuildError", "library_path", "PackedTernaryLinear", "TernaryMatmul",
]


def __getattr__(name):  # lazy: importing MindSpore is slow and not needed for the numpy route
    if name == "PackedTernaryLinear":
        from .linear import PackedTernaryLinear
        return PackedTernaryLinear
    if name in ("get_ms_op", "TernaryMatmul"):
        from . import ops
        return getattr(ops, name)
    raise AttributeError(name)
