// The one CPU-feature detector of both kernel libraries (ops/ternary_matmul, ops/fused_train; each
// compiles cpu_features.cpp into its own .so).
//
// Features are bits; a kernel family asks for the exact set its SIMD functions are compiled for
// (their __attribute__((target(...))) or `#pragma GCC target`), spelled next to that code:
// ternary_common.h (kNeedAvx2, kNeedF16c, kNeedAvx512, kNeedVnni) and ft_common.h (kNeedAvx2,
// kNeedAvx512). Detection uses __builtin_cpu_supports, which also checks that the OS saves the
// AVX / AVX-512 register state; it runs once, on first use.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#define BITCPM_X86 1
#else
#define BITCPM_X86 0
#endif

namespace bitcpm {
namespace cpu {

enum Feature : unsigned {
  kAvx2 = 1u << 0,
  kFma = 1u << 1,
  kF16c = 1u << 2,
  kAvx512F = 1u << 3,
  kAvx512BW = 1u << 4,
  kAvx512DQ = 1u << 5,
  kAvx512VL = 1u << 6,
  kAvx512Vnni = 1u << 7,
};

unsigned features();  // the bits the CPU has (0 off x86)

// Whether the CPU has every feature in `need` (a set of Feature bits).
inline bool has(unsigned need) { return (features() & need) == need; }

}  // namespace cpu
}  // namespace bitcpm
