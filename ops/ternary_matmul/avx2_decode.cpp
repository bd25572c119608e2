// AVX2 (+ F16C) float loops of the KV-cache decoder, driven by decode_ops.cpp (kNeedAvx2; the float16
// head and the attention loops kNeedF16c): the head rows y = x W^T for float32 and float16 W, and the
// attention's score, softmax exp and value loops over a float32 or float16 cache. Every attention loop
// keeps its portable counterpart's lanes and order (mul then add, no FMA), so the attention is
// bit-identical to the portable path; the head sums 16 (float32) or 32 (float16) lanes, which the tests
// compare to the reference within float rounding. Shared work across the rep query heads of a KV head:
// a float16 key block is widened once, each value row is read once for all of them.

#include <algorithm>
#include <type_traits>
#include <vector>

#include "ternary_common.h"

#if BITCPM_X86
#include <immintrin.h>

#define AVX2_FN __attribute__((target("avx2,fma")))

namespace bitcpm {

// The head rows stream the whole head weight (12-25 MB at ~100M) once per token: a software prefetch
// this many bytes ahead, one per cache line (in-process A/B on the ~100M decode op, float16 head: +7-8%
// at 16 KiB, +4-6% at 8 KiB, +2% at 4 KiB, 32 KiB no better; float32 head with the explicit loop below:
// +10%).
constexpr int64_t kHeadPrefetch = 16384;

AVX2_FN void gemv_rows_avx2(const float *x, const float *W, float *y, int64_t M, int64_t K, int64_t N, int64_t n0,
                            int64_t n1) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      const float *a = x + m * K, *b = W + n * K;
      __m256 lo = _mm256_setzero_ps(), hi = lo;  // lanes 0-7 and 8-15 of 16 partial sums, mul then add
      int64_t i = 0;
      for (; i + 16 <= K; i += 16) {
        _mm_prefetch((const char *)(b + i + kHeadPrefetch / 4), _MM_HINT_T0);
        lo = _mm256_add_ps(lo, _mm256_mul_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
        hi = _mm256_add_ps(hi, _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8)));
      }
      alignas(32) float acc[16];
      _mm256_store_ps(acc, lo), _mm256_store_ps(acc + 8, hi);
      float s = 0.0f;
      for (int u = 0; u < 16; ++u) s += acc[u];
      for (; i < K; ++i) s += a[i] * b[i];
      y[m * N + n] = s;
    }
}

#define F16C_FN __attribute__((target("avx2,fma,f16c")))

namespace {

// 8 cache elements as float32: a float32 cache as is, a float16 one widened (exact).
F16C_FN inline __m256 load8(const float *p) { return _mm256_loadu_ps(p); }
F16C_FN inline __m256 load8(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
inline float widen(float x) { return x; }
inline float widen(uint16_t h) { return half_to_float(h); }

}  // namespace

// GCC ignores a target attribute on a function template: the two templates are compiled under the same
// target by pragma instead (kNeedF16c, as F16C_FN).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace {

// scores[0..7] = (q . k_i) * scale for 8 float keys kb [8, D], D % 8 == 0: the 8-key loop of
// attn_scores_avx2 (same lanes, same order), for keys widened once from a float16 cache.
inline void score8(const float *q, const float *kb, int64_t D, __m256 vscale, float *scores) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t i = 0; i < D; i += 8) {
    const __m256 qv = _mm256_loadu_ps(q + i);
    a0 = _mm256_add_ps(a0, _mm256_mul_ps(qv, _mm256_loadu_ps(kb + i)));
    a1 = _mm256_add_ps(a1, _mm256_mul_ps(qv, _mm256_loadu_ps(kb + D + i)));
    a2 = _mm256_add_ps(a2, _mm256_mul_ps(qv, _mm256_loadu_ps(kb + 2 * D + i)));
    a3 = _mm256_add_ps(a3, _mm256_mul_ps(qv, _mm256_loadu_ps(kb + 3 * D + i)));
    a4 = _mm256_add_ps(a4, _mm256_mul_ps(qv, _mm256_loadu_ps(kb + 4 * D + i)));
    a5 = _mm256_add_ps(a5, _mm256_mul_ps(qv, _mm256_loadu_ps(kb + 5 * D + i)));
    a6 = _mm256_add_ps(a6, _mm256_mul_ps(qv, _mm256_loadu_ps(kb + 6 * D + i)));
    a7 = _mm256_add_ps(a7, _mm256_mul_ps(qv, _mm256_loadu_ps(kb + 7 * D + i)));
  }
  const __m256 x = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  const __m256 y = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
  const __m256 s = _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
  _mm256_storeu_ps(scores, _mm256_mul_ps(s, vscale));
}

// 8 consecutive keys [8, D] as float32: a float32 cache's own memory, a float16 one widened into buf
// once (not once per query head).
inline const float *keys8(const float *k, int64_t, float *) { return k; }
inline const float *keys8(const uint16_t *k, int64_t D, float *buf) {
  for (int64_t i = 0; i < 8 * D; i += 8) _mm256_storeu_ps(buf + i, load8(k + i));
  return buf;
}

}  // namespace

template <typename T>
void attn_scores_avx2(const float *q, int64_t rep, const T *k, int64_t n, int64_t D, float scale,
                              float *scores, int64_t stride) {
  int64_t j0 = 0;
  if (D % 8 == 0) {  // 8 keys at a time: one accumulator per key, reduced together by two hadd levels
    const __m256 vscale = _mm256_set1_ps(scale);
    std::vector<float> buf(std::is_same<T, float>::value ? 0 : 8 * D);
    for (; j0 + 8 <= n; j0 += 8) {
      const float *kb = keys8(k + j0 * D, D, buf.data());  // 8 keys (8 D floats), in L1 across the rep heads
      for (int64_t r = 0; r < rep; ++r) score8(q + r * D, kb, D, vscale, scores + r * stride + j0);
    }
  }
  const int64_t D8 = D - D % 8;
  for (int64_t j = j0; j < n; ++j) {  // the remaining keys (all of them when D % 8 != 0), one at a time
    const T *kj = k + j * D;
    for (int64_t r = 0; r < rep; ++r) {
      const float *qr = q + r * D;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t i = 0; i < D8; i += 8)
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_loadu_ps(qr + i), load8(kj + i)));
      alignas(32) float a[8];
      _mm256_store_ps(a, acc);
      float s = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
      for (int64_t i = D8; i < D; ++i) s += qr[i] * widen(kj[i]);
      scores[r * stride + j] = s * scale;
    }
  }
}

template <typename T>
void attn_accumulate_avx2(const float *w, const T *v, int64_t n, int64_t D, float *out) {
  int64_t i0 = 0;
  for (; i0 + 32 <= D; i0 += 32) {  // 32 outputs stay in registers over all n rows
    __m256 o0 = _mm256_loadu_ps(out + i0), o1 = _mm256_loadu_ps(out + i0 + 8), o2 = _mm256_loadu_ps(out + i0 + 16),
           o3 = _mm256_loadu_ps(out + i0 + 24);
    for (int64_t j = 0; j < n; ++j) {
      const __m256 wj = _mm256_set1_ps(w[j]);
      const T *vj = v + j * D + i0;
      o0 = _mm256_add_ps(o0, _mm256_mul_ps(wj, load8(vj)));
      o1 = _mm256_add_ps(o1, _mm256_mul_ps(wj, load8(vj + 8)));
      o2 = _mm256_add_ps(o2, _mm256_mul_ps(wj, load8(vj + 16)));
      o3 = _mm256_add_ps(o3, _mm256_mul_ps(wj, load8(vj + 24)));
    }
    _mm256_storeu_ps(out + i0, o0), _mm256_storeu_ps(out + i0 + 8, o1);
    _mm256_storeu_ps(out + i0 + 16, o2), _mm256_storeu_ps(out + i0 + 24, o3);
  }
  for (; i0 + 8 <= D; i0 += 8) {
    __m256 o = _mm256_loadu_ps(out + i0);
    for (int64_t j = 0; j < n; ++j)
      o = _mm256_add_ps(o, _mm256_mul_ps(_mm256_set1_ps(w[j]), load8(v + j * D + i0)));
    _mm256_storeu_ps(out + i0, o);
  }
  for (; i0 < D; ++i0)
    for (int64_t j = 0; j < n; ++j) out[i0] += w[j] * widen(v[j * D + i0]);
}

namespace {

// out[r] [D] += sum_j w[r][j] v_j for NR heads over the same value rows v [n, D] (j ascending, as
// attn_accumulate_avx2): each block of 16 values is loaded (widened) once for the NR heads.
template <int NR, typename T>
void accumulate_heads(const float *w, int64_t wstride, const T *v, int64_t n, int64_t D, float *out,
                      int64_t ostride) {
  int64_t i0 = 0;
  for (; i0 + 16 <= D; i0 += 16) {
    __m256 o0[NR], o1[NR];
    for (int r = 0; r < NR; ++r)
      o0[r] = _mm256_loadu_ps(out + r * ostride + i0), o1[r] = _mm256_loadu_ps(out + r * ostride + i0 + 8);
    for (int64_t j = 0; j < n; ++j) {
      const __m256 v0 = load8(v + j * D + i0), v1 = load8(v + j * D + i0 + 8);
      for (int r = 0; r < NR; ++r) {
        const __m256 wj = _mm256_set1_ps(w[r * wstride + j]);
        o0[r] = _mm256_add_ps(o0[r], _mm256_mul_ps(wj, v0));
        o1[r] = _mm256_add_ps(o1[r], _mm256_mul_ps(wj, v1));
      }
    }
    for (int r = 0; r < NR; ++r)
      _mm256_storeu_ps(out + r * ostride + i0, o0[r]), _mm256_storeu_ps(out + r * ostride + i0 + 8, o1[r]);
  }
  for (int r = 0; r < NR && i0 < D; ++r)  // the last D % 16 values, head by head
    for (int64_t i = i0; i < D; ++i)
      for (int64_t j = 0; j < n; ++j) out[r * ostride + i] += w[r * wstride + j] * widen(v[j * D + i]);
}

}  // namespace

template <typename T>
void attn_accumulate_heads_avx2(const float *w, int64_t wstride, int64_t rep, const T *v, int64_t n, int64_t D,
                                float *out, int64_t ostride) {
  for (int64_t r = 0; r < rep; r += 4) {
    const float *wr = w + r * wstride;
    float *o = out + r * ostride;
    switch (std::min<int64_t>(4, rep - r)) {
      case 4: accumulate_heads<4>(wr, wstride, v, n, D, o, ostride); break;
      case 3: accumulate_heads<3>(wr, wstride, v, n, D, o, ostride); break;
      case 2: accumulate_heads<2>(wr, wstride, v, n, D, o, ostride); break;
      default: accumulate_heads<1>(wr, wstride, v, n, D, o, ostride);
    }
  }
}

template void attn_scores_avx2<float>(const float *, int64_t, const float *, int64_t, int64_t, float, float *,
                                       int64_t);
template void attn_scores_avx2<uint16_t>(const float *, int64_t, const uint16_t *, int64_t, int64_t, float, float *,
                                          int64_t);
template void attn_accumulate_avx2<float>(const float *, const float *, int64_t, int64_t, float *);
template void attn_accumulate_avx2<uint16_t>(const float *, const uint16_t *, int64_t, int64_t, float *);
template void attn_accumulate_heads_avx2<float>(const float *, int64_t, int64_t, const float *, int64_t, int64_t,
                                                float *, int64_t);
template void attn_accumulate_heads_avx2<uint16_t>(const float *, int64_t, int64_t, const uint16_t *, int64_t,
                                                   int64_t, float *, int64_t);

#pragma GCC pop_options

namespace {

// exp_softmax's operations in its order, 8 lanes.
AVX2_FN inline __m256 exp8(__m256 v) {
  // (bound, v) operand order: a NaN v passes through both, as in std::max / std::min
  const __m256 c = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f),
                                 _mm256_max_ps(_mm256_set1_ps(-88.3762626647949f), v));
  const __m256 fx = _mm256_floor_ps(_mm256_add_ps(_mm256_mul_ps(c, _mm256_set1_ps(1.44269504088896341f)),
                                                  _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_sub_ps(c, _mm256_mul_ps(fx, _mm256_set1_ps(0.693359375f)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(fx, _mm256_set1_ps(-2.12194440e-4f)));
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_add_ps(_mm256_mul_ps(y, z), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  const __m256 res = _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
  return _mm256_blendv_ps(res, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

}  // namespace

AVX2_FN void exp_shifted_avx2(float *x, int64_t n, float shift) {
  const __m256 vshift = _mm256_set1_ps(shift);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(x + j, exp8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vshift)));
  for (; j < n; ++j) x[j] = exp_softmax(x[j] - shift);
}

AVX2_FN void silu_mul_avx2(float *gate, const float *up, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {  // (g / (1 + exp(-g))) * u, as silu_mul
    const __m256 g = _mm256_loadu_ps(gate + j);
    const __m256 e = exp8(_mm256_xor_ps(g, sign));
    _mm256_storeu_ps(gate + j, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(one, e)), _mm256_loadu_ps(up + j)));
  }
  for (; j < n; ++j) gate[j] = silu_mul(gate[j], up[j]);
}

namespace {

// ((l0+l4) + (l2+l6)) + ((l1+l5) + (l3+l7)): not hsum256's order, which sums l1 before l2; the half
// head keeps the order it was tested with.
F16C_FN inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

}  // namespace

// One weight row at a time, read as one sequential stream (four rows interleaved ran at ~60% of the
// bandwidth on the 2-core VM of docs/generation.md); four 8-lane accumulators hide the add latency.
// mul + add, no FMA contraction, like every float kernel here. K % 32 tail: 8 lanes, then scalar.
F16C_FN void half_gemv_rows_f16c(const float *x, const uint16_t *W, float *y, int64_t M, int64_t K, int64_t N,
                                 int64_t n0, int64_t n1) {
  for (int64_t m = 0; m < M; ++m) {
    const float *a = x + m * K;
    for (int64_t n = n0; n < n1; ++n) {
      const uint16_t *b = W + n * K;
      __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      int64_t i = 0;
      for (; i + 32 <= K; i += 32) {
        _mm_prefetch((const char *)(b + i + kHeadPrefetch / 2), _MM_HINT_T0);
        s0 = _mm256_add_ps(s0, _mm256_mul_ps(_mm256_loadu_ps(a + i), load8(b + i)));
        s1 = _mm256_add_ps(s1, _mm256_mul_ps(_mm256_loadu_ps(a + i + 8), load8(b + i + 8)));
        s2 = _mm256_add_ps(s2, _mm256_mul_ps(_mm256_loadu_ps(a + i + 16), load8(b + i + 16)));
        s3 = _mm256_add_ps(s3, _mm256_mul_ps(_mm256_loadu_ps(a + i + 24), load8(b + i + 24)));
      }
      for (; i + 8 <= K; i += 8) s0 = _mm256_add_ps(s0, _mm256_mul_ps(_mm256_loadu_ps(a + i), load8(b + i)));
      float r = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
      for (; i < K; ++i) r += a[i] * half_to_float(b[i]);
      y[m * N + n] = r;
    }
  }
}

}  // namespace bitcpm
#endif  // BITCPM_X86
