// The fused training kernels compiled for the compiler's baseline (SSE2 on x86-64, or any other architecture).
// The kernel bodies live in ft_kernels.h / ft_attention.h; this file only sets the instruction set.
// Standard headers are included before the target region, so no shared inline or template code is
// compiled with instructions the CPU might lack.

#include <algorithm>
#include <cmath>

#include "ft_common.h"

// (no target pragma: the compiler's baseline instruction set)

namespace bitcpm {
namespace ft {
namespace portable {

#define FT_VBYTES 16   // vector width in bytes (ft_vec.h)
#define FT_NV_COLS 2  // tile widths in vectors (ft_attention.h)
#define FT_NV_MAT 2
#include "ft_vec.h"
#include "ft_kernels.h"
#include "ft_attention.h"

extern const KernelTable kTable = {"portable", ce_forward, ce_backward, distill_forward, distill_backward, rmsnorm_forward, rmsnorm_backward,
                                   swiglu_forward, swiglu_backward, attention_forward, attention_backward,
                                   adamw_update, sum_squares};

#undef FT_VBYTES
#undef FT_NV_COLS
#undef FT_NV_MAT

}  // namespace portable
}  // namespace ft
}  // namespace bitcpm
