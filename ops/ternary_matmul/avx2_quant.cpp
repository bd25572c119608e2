// The AVX2 quantizers (kNeedAvx2): the per-token int8 activation quantizer of every A8 path, and the
// ternary fake quantization of one weight row (training forward). Both are bit-identical to their
// portable loops in portable.cpp.

#include <algorithm>
#include <cmath>

#include "ternary_common.h"

#if BITCPM_X86
#include <immintrin.h>

#define AVX2_FN __attribute__((target("avx2,fma")))

namespace bitcpm {

// The per-token A8 quantizer of portable.cpp (quantize_rows), 32 inputs per step, bit-identical: the
// same max (NaN ignored, as std::max(amax, |x|)), the same product, round to nearest even (= nearbyint
// in the default rounding mode), the same clamps (NaN -> -128, as std::max(-128, NaN)).
namespace {
// 8 int32 codes of x[0..8) * s: rounded to nearest even, clamped max(., -128) then min(., 127)
AVX2_FN inline __m256i q8(const float *x, __m256 s) {
  const __m256 r = _mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(x), s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-128.0f)), _mm256_set1_ps(127.0f)));
}
}  // namespace

AVX2_FN void quantize_rows_avx2(const float *x, int64_t M, int64_t K, float eps, int8_t *xq, float *s) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const int64_t K32 = K - K % 32;
  for (int64_t m = 0; m < M; ++m) {
    const float *xr = x + m * K;
    __m256 vmax = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(xr + k), abs_mask), vmax);
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, vmax);
    float amax = 0.0f;
    for (float v : lanes) amax = std::max(amax, v);
    for (; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
    const float sm = 127.0f / std::max(amax, eps);
    s[m] = sm;
    const __m256 vs = _mm256_set1_ps(sm);
    int8_t *qr = xq + m * K;
    for (k = 0; k < K32; k += 32) {
      // packs interleave 128-bit lanes: int8 order a0-3 b0-3 c0-3 d0-3 a4-7 b4-7 c4-7 d4-7, fixed by `order`
      const __m256i ab = _mm256_packs_epi32(q8(xr + k, vs), q8(xr + k + 8, vs)),
                    cd = _mm256_packs_epi32(q8(xr + k + 16, vs), q8(xr + k + 24, vs));
      _mm256_storeu_si256((__m256i *)(qr + k), _mm256_permutevar8x32_epi32(_mm256_packs_epi16(ab, cd), order));
    }
    for (; k < K; ++k) qr[k] = (int8_t)std::min(127.0f, std::max(-128.0f, std::nearbyint(xr[k] * sm)));
  }
}

// g % 8 == 0. Group |w| sums in 8 float lanes, combined in double; w / s rounded half to even.
AVX2_FN void fake_quant_row_avx2(const float *w, float *out, int64_t K, int64_t g, float eps) {
  const __m256 sign = _mm256_set1_ps(-0.0f), one = _mm256_set1_ps(1.0f), mone = _mm256_set1_ps(-1.0f);
  for (int64_t k0 = 0; k0 < K; k0 += g) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t k = 0; k < g; k += 8) acc = _mm256_add_ps(acc, _mm256_andnot_ps(sign, _mm256_loadu_ps(w + k0 + k)));
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, acc);
    double sum = 0.0;
    for (float v : lanes) sum += v;
    const float sc = std::max((float)(sum / (double)g), eps);
    const __m256 vs = _mm256_set1_ps(sc);
    for (int64_t k = 0; k < g; k += 8) {
      __m256 lv = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(w + k0 + k), vs),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      lv = _mm256_min_ps(one, _mm256_max_ps(mone, lv));
      _mm256_storeu_ps(out + k0 + k, _mm256_mul_ps(lv, vs));
    }
  }
}

}  // namespace bitcpm
#endif  // BITCPM_X86
