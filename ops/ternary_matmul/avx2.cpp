// AVX2 + FMA path (x86 CPUs with avx2 and fma, kNeedAvx2: functions compiled with target("avx2,fma");
// the float16 decode head also needs f16c, kNeedF16c), weight-only kernels: the group scale is folded
// into an 8-entry lookup table indexed by the 2-bit code, so each weight costs one permute and one FMA
// per activation row (GEMV tile for M < 4). The W1.58A8 kernels are in avx2_a8.cpp, the decoder's float
// loops (head rows, attention) in avx2_decode.cpp, the quantizers in avx2_quant.cpp.

#include <algorithm>
#include <cmath>
#include <vector>

#include "avx2_common.h"

#if BITCPM_X86

namespace bitcpm {

std::vector<Chunk8> make_chunks8(int64_t K, int64_t g) {
  std::vector<Chunk8> ch;
  ch.reserve(K / 8);
  for (int64_t base = 0; base < K; base += kBlock) {
    int64_t B = std::min<int64_t>(kBlock, K - base);
    int64_t q = B / 4;
    for (int t = 0; t < 4; ++t)
      for (int64_t j = 0; j < q; j += 8) {
        int64_t k = base + t * q + j;
        ch.push_back({(int32_t)k, (int32_t)(base / 4 + j), 2 * t, (int32_t)(k / g)});
      }
  }
  return ch;
}

namespace {

// Weight-only tile: MR rows of x times NR packed weight rows. The group scale is folded into
// an 8-entry lookup table (index = 3 low bits of the shifted byte; entries {-s, 0, s, 0} twice),
// rebuilt once per group, so each weight costs one permute and one FMA per activation row.
template <int MR, int NR>
AVX2_FN void tile_f32(const float *x, int64_t K, const uint8_t *W, int64_t ldw, const float *S, int64_t G,
                      const Chunk8 *ch, int64_t nch, float *y, int64_t ldy) {
  __m256 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_setzero_ps();
  const __m256 base_lut = _mm256_setr_ps(-1.f, 0.f, 1.f, 0.f, -1.f, 0.f, 1.f, 0.f);
  __m256 lut[NR];
  for (int r = 0; r < NR; ++r) lut[r] = _mm256_setzero_ps();
  int32_t cur = -1;
  for (int64_t c = 0; c < nch; ++c) {
    const Chunk8 cc = ch[c];
    if (cc.grp != cur) {
      cur = cc.grp;
      for (int r = 0; r < NR; ++r) lut[r] = _mm256_mul_ps(base_lut, _mm256_set1_ps(S[r * G + cur]));
    }
    const __m128i cnt = _mm_cvtsi32_si128(cc.shift);
    __m256 w[NR];
    for (int r = 0; r < NR; ++r) {
      __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(W + r * ldw + cc.byte)));
      w[r] = _mm256_permutevar8x32_ps(lut[r], _mm256_srl_epi32(b, cnt));
    }
    for (int i = 0; i < MR; ++i) {
      __m256 xv = _mm256_loadu_ps(x + i * K + cc.k);
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm256_fmadd_ps(xv, w[r], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) y[i * ldy + r] = hsum256(acc[i][r]);
}

// Weight-only tile for decode-size M (one activation row): full 128-blocks, g % 32 == 0.
// The 32 packed bytes of a block are widened once (4 x cvtepu8_epi32) and reused for the four
// slots t (shift by 2t); two accumulators per row alternate to hide the FMA latency.
template <int NR>
AVX2_FN void tile_f32_gemv(const float *x, int64_t K, const uint8_t *W, int64_t ldw, const float *S, int64_t G,
                           int64_t g, float *y) {
  __m256 acc0[NR], acc1[NR];
  for (int r = 0; r < NR; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  const __m256 base_lut = _mm256_setr_ps(-1.f, 0.f, 1.f, 0.f, -1.f, 0.f, 1.f, 0.f);
  for (int64_t b = 0; b < K / 128; ++b) {
    const float *xb = x + b * 128;
    for (int r = 0; r < NR; ++r) {
      const uint8_t *wb = W + r * ldw + b * 32;
      __m256i v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(wb + 0)));
      __m256i v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(wb + 8)));
      __m256i v2 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(wb + 16)));
      __m256i v3 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(wb + 24)));
      for (int t = 0; t < 4; ++t) {
        const __m256 lut = _mm256_mul_ps(base_lut, _mm256_set1_ps(S[r * G + (b * 128 + t * 32) / g]));
        const float *xt = xb + t * 32;
        acc0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xt + 0), _mm256_permutevar8x32_ps(lut, _mm256_srli_epi32(v0, 2 * t)), acc0[r]);
        acc1[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xt + 8), _mm256_permutevar8x32_ps(lut, _mm256_srli_epi32(v1, 2 * t)), acc1[r]);
        acc0[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xt + 16), _mm256_permutevar8x32_ps(lut, _mm256_srli_epi32(v2, 2 * t)), acc0[r]);
        acc1[r] = _mm256_fmadd_ps(_mm256_loadu_ps(xt + 24), _mm256_permutevar8x32_ps(lut, _mm256_srli_epi32(v3, 2 * t)), acc1[r]);
      }
    }
  }
  for (int r = 0; r < NR; ++r) y[r] = hsum256(_mm256_add_ps(acc0[r], acc1[r]));
}

template <int MR, int NR>
void run_f32_tiles(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                   int64_t G, const Chunk8 *ch, int64_t nch, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  (void)M;
  const int64_t ldw = K / 4;
  int64_t m = m0;
  for (; m + MR <= m1; m += MR) {
    int64_t n = n0;
    for (; n + NR <= n1; n += NR)
      tile_f32<MR, NR>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, ch, nch, y + m * N + n, N);
    for (; n < n1; ++n) tile_f32<MR, 1>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, ch, nch, y + m * N + n, N);
  }
  for (; m < m1; ++m) {
    int64_t n = n0;
    for (; n + NR <= n1; n += NR)
      tile_f32<1, NR>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, ch, nch, y + m * N + n, N);
    for (; n < n1; ++n) tile_f32<1, 1>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, ch, nch, y + m * N + n, N);
  }
}

}  // namespace

void avx2_f32(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
              int64_t G, const Chunk8 *ch, int64_t nch, int64_t n0, int64_t n1) {
  if (M < 4) {
    const int64_t g = K / G, ldw = K / 4;
    if (K % 128 == 0 && g % 32 == 0) {
      for (int64_t m = 0; m < M; ++m) {
        int64_t n = n0;
        for (; n + 4 <= n1; n += 4) tile_f32_gemv<4>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n);
        for (; n < n1; ++n) tile_f32_gemv<1>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n);
      }
      return;
    }
    run_f32_tiles<1, 4>(x, W, S, y, M, K, N, G, ch, nch, 0, M, n0, n1);
    return;
  }
  // Block over m so that the x panel stays in L2 while the packed rows stream.
  const int64_t MB = 64;
  for (int64_t m0 = 0; m0 < M; m0 += MB) {
    int64_t m1 = std::min(M, m0 + MB);
    for (int64_t nb = n0; nb < n1; nb += 48)
      run_f32_tiles<4, 3>(x, W, S, y, M, K, N, G, ch, nch, m0, m1, nb, std::min(n1, nb + 48));
  }
}

}  // namespace bitcpm
#endif  // BITCPM_X86
