// Run-time choice of the kernel table: the best instruction set the CPU has, capped by
// bitcpm_fused_set_max_isa (tests and benchmarks run the AVX2 and portable paths on an AVX-512 CPU).

#include "ft_common.h"

namespace bitcpm {
namespace ft {

std::atomic<int> g_max_isa{kIsaBest};

bool cpu_has_avx2_fma() {
#if BITCPM_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if BITCPM_X86
  static const bool ok = cpu_has_avx2_fma() && __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vl");
  return ok;
#else
  return false;
#endif
}

const KernelTable &table() {
  const int cap = g_max_isa.load();
  if (cap == kIsaBest && cpu_has_avx512()) return avx512::kTable;
  if (cap <= kIsaAvx2 && cpu_has_avx2_fma()) return avx2::kTable;
  return portable::kTable;
}

}  // namespace ft
}  // namespace bitcpm
