// CPU feature detection (cpu_features.h), shared by both kernel libraries.

#include "cpu_features.h"

namespace bitcpm {
namespace cpu {

namespace {

unsigned detect() {
  unsigned f = 0;
#if BITCPM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) f |= kAvx2;
  if (__builtin_cpu_supports("fma")) f |= kFma;
  if (__builtin_cpu_supports("f16c")) f |= kF16c;
  if (__builtin_cpu_supports("avx512f")) f |= kAvx512F;
  if (__builtin_cpu_supports("avx512bw")) f |= kAvx512BW;
  if (__builtin_cpu_supports("avx512dq")) f |= kAvx512DQ;
  if (__builtin_cpu_supports("avx512vl")) f |= kAvx512VL;
  if (__builtin_cpu_supports("avx512vnni")) f |= kAvx512Vnni;
#endif
  return f;
}

}  // namespace

unsigned features() {
  static const unsigned f = detect();
  return f;
}

}  // namespace cpu
}  // namespace bitcpm
