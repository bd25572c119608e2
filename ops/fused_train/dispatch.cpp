// Run-time choice of the kernel table: the best instruction set the CPU has (ops/common/cpu_features.h;
// kNeed* in ft_common.h), capped by bitcpm_fused_set_max_isa (tests and benchmarks run the AVX2 and
// portable paths on an AVX-512 CPU).

#include "ft_common.h"

namespace bitcpm {
namespace ft {

std::atomic<int> g_max_isa{kIsaBest};

const KernelTable &table() {
  const int cap = g_max_isa.load();
  if (cap == kIsaBest && cpu::has(kNeedAvx512)) return avx512::kTable;
  if (cap <= kIsaAvx2 && cpu::has(kNeedAvx2)) return avx2::kTable;
  return portable::kTable;
}

}  // namespace ft
}  // namespace bitcpm
