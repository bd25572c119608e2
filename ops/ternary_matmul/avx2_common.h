// Shared by the AVX2 kernel files (avx2.cpp: weight-only, avx2_a8.cpp: W1.58A8): the target attribute
// and the horizontal sum of 8 float32 lanes in one fixed order, ((l0 + l4) + (l1 + l5)) + ((l2 + l6) +
// (l3 + l7)), which every AVX2 kernel's results depend on bit for bit.
#pragma once

#include "ternary_common.h"

#if BITCPM_X86
#include <immintrin.h>

#define AVX2_FN __attribute__((target("avx2,fma")))

namespace bitcpm {

AVX2_FN inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v);
  __m128 hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  __m128 sh = _mm_movehdup_ps(lo);
  __m128 s = _mm_add_ps(lo, sh);
  sh = _mm_movehl_ps(sh, s);
  s = _mm_add_ss(s, sh);
  return _mm_cvtss_f32(s);
}

}  // namespace bitcpm
#endif  // BITCPM_X86
