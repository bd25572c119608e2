// The fused training kernels compiled for AVX-512 F/BW/DQ/VL (+ AVX2, FMA): 16-lane zmm vectors.
// The kernel bodies live in ft_kernels.h / ft_attention.h; this file only sets the instruction set.
// Standard headers are included before the target region, so no shared inline or template code is
// compiled with instructions the CPU might lack.

#include <algorithm>
#include <cmath>

#include "ft_common.h"

#if BITCPM_X86  // elsewhere this file is compiled for the baseline and never selected
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
#endif

namespace bitcpm {
namespace ft {
namespace avx512 {

#define FT_VBYTES 64   // vector width in bytes (ft_vec.h)
#define FT_NV_COLS 2  // tile widths in vectors (ft_attention.h)
#define FT_NV_MAT 4
#include "ft_vec.h"
#include "ft_kernels.h"
#include "ft_attention.h"

extern const KernelTable kTable = {"avx512", ce_forward, ce_backward, distill_forward, distill_backward, rmsnorm_forward, rmsnorm_backward,
                                   swiglu_forward, swiglu_backward, attention_forward, attention_backward,
                                   adamw_update, sum_squares};

#undef FT_VBYTES
#undef FT_NV_COLS
#undef FT_NV_MAT

}  // namespace avx512
}  // namespace ft
}  // namespace bitcpm

#if BITCPM_X86
#pragma GCC pop_options
#endif
