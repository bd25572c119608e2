// The fused training kernels compiled for AVX2 + FMA: 8-lane ymm vectors.
// The kernel bodies live in ft_kernels.h / ft_attention.h; this file only sets the instruction set.
// Standard headers are included before the target region, so no shared inline or template code is
// compiled with instructions the CPU might lack.

#include <algorithm>
#include <cmath>

#include "ft_common.h"

#if BITCPM_X86  // elsewhere this file is compiled for the baseline and never selected
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif

namespace bitcpm {
namespace ft {
namespace avx2 {

#define FT_VBYTES 32   // vector width in bytes (ft_vec.h)
#define FT_NV_COLS 2  // tile widths in vectors (ft_attention.h)
#define FT_NV_MAT 2
#include "ft_vec.h"
#include "ft_kernels.h"
#include "ft_attention.h"

extern const KernelTable kTable = {"avx2", ce_forward, ce_backward, distill_forward, distill_backward, rmsnorm_forward, rmsnorm_backward,
                                   swiglu_forward, swiglu_backward, attention_forward, attention_backward,
                                   adamw_update, sum_squares};

#undef FT_VBYTES
#undef FT_NV_COLS
#undef FT_NV_MAT

}  // namespace avx2
}  // namespace ft
}  // namespace bitcpm

#if BITCPM_X86
#pragma GCC pop_options
#endif
