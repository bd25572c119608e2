// The two float kernels of the KV-cache decoder (bitcpm_ms/inference/decoder.py): portable code and
// drivers (the AVX2 / F16C head rows are in avx2_decode.cpp). MindSpore ops in bitcpm_ms/kernels/ops.py,
// ctypes in bitcpm_ms/kernels/library.py, numpy references in bitcpm_ms/kernels/reference.py.
//
// 1. DecodeAttention: one decode step of grouped-query attention with a KV cache, one kernel
//    instead of ~20 MindSpore ops per layer (decode_attention_reference).
// 2. FloatMatmulNT: y [M,N] = x [M,K] @ W^T, W [N,K] row-major float32 or float16 (the lm_head of a
//    decode step, M = batch). MindSpore's CPU MatMul costs several times more at M <= 8 (it re-packs
//    the constant weight every call); here each output is one contiguous dot product
//    (float_matmul_nt_reference). A float16 W (CachedLM(head_dtype="float16"), the precision of
//    llama.cpp's F16 output tensor) halves the bytes a decode step streams; products and sums stay
//    float32 (AVX2 + F16C converts 8 halves per instruction).
//
// DecodeAttention:
// For each row b (position p = pos[b]) and query head h (KV head g = h / (H / KVH)):
//   rope(x) = x * cos[b] + rotate_half(x) * sin[b],  rotate_half(x) = concat(-x[D/2:], x[:D/2])
//   q = rope(q_in[b, h]);  k_new = rope(k_in[b, g])                       (MindFormers' RoPE)
//   s_j = (q . k_cache[b, g, j]) * scale for j < p;  s_self = (q . k_new) * scale
//   ctx[b, h] = sum_j softmax(s)_j v_cache[b, g, j] + softmax(s)_self v_in[b, g]
// Cache slots j >= p are never read (the MindSpore form masks them with -10000, i.e. weight 0).
// Outputs ctx [B, H*D] and k_rot [B, KVH*D] (the rotated new key, for the cache).
// Float arithmetic: RoPE exactly as MindFormers' element-wise ops (no FMA: -ffp-contract=off);
// dot products use 8 partial sums, so scores differ from MindSpore's BatchMatMul in the last bits.

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "ternary_common.h"

namespace bitcpm {
namespace {

inline float widen(float x) { return x; }
inline float widen(uint16_t h) { return half_to_float(h); }

// a . b with b float32 or float16 (widened exactly): 8 lane partial sums, mul then add.
template <typename T>
inline float dot(const float *a, const T *b, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * widen(b[i + u]);
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * widen(b[i]);
  return s;
}

inline void rope(const float *x, const float *cos, const float *sin, float *out, int64_t D) {
  const int64_t half = D / 2;
  for (int64_t i = 0; i < half; ++i) out[i] = x[i] * cos[i] + (-x[i + half]) * sin[i];
  for (int64_t i = half; i < D; ++i) out[i] = x[i] * cos[i] + x[i - half] * sin[i];
}

// The (row, KV head) units [lo, hi) of decode_attention_impl over a cache of element type T.
template <typename T>
void attention_units(const float *q_in, const float *k_in, const float *v_in, const T *k_cache, const T *v_cache,
                     const int32_t *pos, const float *cos, const float *sin, float scale, int64_t H, int64_t KVH,
                     int64_t S, int64_t D, float *ctx, float *k_rot, bool simd, const int32_t *cache_rows,
                     int64_t lo, int64_t hi) {
  const int64_t rep = H / KVH;
  // q: the rep rotated query heads of one KV head [rep, D]; scores [rep, S + 1], then their softmax weights
  std::vector<float> q(rep * D), scores(rep * (S + 1));
  for (int64_t t = lo; t < hi; ++t) {
    const int64_t b = t / KVH, g = t % KVH, p = pos[b];
    const float *cb = cos + b * D, *sb = sin + b * D;
    float *kr = k_rot + (b * KVH + g) * D;
    rope(k_in + (b * KVH + g) * D, cb, sb, kr, D);
    const int64_t cb_row = cache_rows ? cache_rows[b] : b;
    const T *kc = k_cache + (cb_row * KVH + g) * S * D, *vc = v_cache + (cb_row * KVH + g) * S * D;
    const float *vn = v_in + (b * KVH + g) * D;
    for (int64_t r = 0; r < rep; ++r) rope(q_in + (b * H + g * rep + r) * D, cb, sb, q.data() + r * D, D);
#if BITCPM_X86
    if (simd) attn_scores_avx2<T>(q.data(), rep, kc, p, D, scale, scores.data(), S + 1);
#endif
    for (int64_t r = 0; r < rep; ++r) {  // scores -> softmax weights, in place
      float *sc = scores.data() + r * (S + 1);
      const float *qr = q.data() + r * D;
      if (!simd)
        for (int64_t j = 0; j < p; ++j) sc[j] = dot(qr, kc + j * D, D) * scale;
      sc[p] = dot(qr, kr, D) * scale;
      float mx = -INFINITY;
      for (int64_t j = 0; j <= p; ++j) mx = std::max(mx, sc[j]);
      exp_shifted(sc, p + 1, mx, simd);
      float sum = 0.0f;
      for (int64_t j = 0; j <= p; ++j) sum += sc[j];
      for (int64_t j = 0; j <= p; ++j) sc[j] = sc[j] / sum;
    }
    float *out = ctx + (b * H + g * rep) * D;  // the rep heads' outputs [rep, D], contiguous
    std::memset(out, 0, sizeof(float) * rep * D);
#if BITCPM_X86
    if (simd) {  // sum_j w_j v_j over the cache for all rep heads at once, then each head's own value
      attn_accumulate_heads_avx2<T>(scores.data(), S + 1, rep, vc, p, D, out, D);
      for (int64_t r = 0; r < rep; ++r)
        attn_accumulate_avx2<float>(scores.data() + r * (S + 1) + p, vn, 1, D, out + r * D);
      continue;
    }
#endif
    for (int64_t r = 0; r < rep; ++r) {
      const float *w = scores.data() + r * (S + 1);
      float *o = out + r * D;
      for (int64_t j = 0; j < p; ++j) {
        const T *vj = vc + j * D;
        for (int64_t i = 0; i < D; ++i) o[i] += w[j] * widen(vj[i]);
      }
      for (int64_t i = 0; i < D; ++i) o[i] += w[p] * vn[i];
    }
  }
}

}  // namespace

int decode_attention_impl(const float *q_in, const float *k_in, const float *v_in, KVCacheRef cache,
                          const int32_t *pos, const float *cos, const float *sin, float scale, int64_t B, int64_t H,
                          int64_t KVH, int64_t S, int64_t D, float *ctx, float *k_rot, int nthreads,
                          const int32_t *cache_rows) {
  if (B <= 0 || H <= 0 || KVH <= 0 || S <= 0 || D <= 0 || D % 2 || H % KVH)
    return set_error(3, "DecodeAttention: need B, H, KVH, S, D > 0, D even, H % KVH == 0");
  for (int64_t b = 0; b < B; ++b)
    if (pos[b] < 0 || pos[b] > S)
      return set_error(3, "DecodeAttention: position " + std::to_string(pos[b]) + " of row " + std::to_string(b) +
                              " outside the cache (0.." + std::to_string(S) + ")");
  // work per (row, KV head): rep heads over pos + 1 keys; small steps stay on the calling thread
  const int64_t work = B * H * (S + 1) * D;
  const int nt = work < min_parallel_work() ? 1 : resolve_threads(nthreads);
#if BITCPM_X86
  const bool simd = !g_force_portable.load() && cpu::has(kNeedF16c);
#else
  const bool simd = false;
#endif
  parallel_for(B * KVH, nt, 1, [&](int64_t lo, int64_t hi) {
    if (cache.half)
      attention_units(q_in, k_in, v_in, (const uint16_t *)cache.k, (const uint16_t *)cache.v, pos, cos, sin, scale,
                      H, KVH, S, D, ctx, k_rot, simd, cache_rows, lo, hi);
    else
      attention_units(q_in, k_in, v_in, (const float *)cache.k, (const float *)cache.v, pos, cos, sin, scale, H,
                      KVH, S, D, ctx, k_rot, simd, cache_rows, lo, hi);
  });
  return 0;
}

bool elementwise_simd() {
#if BITCPM_X86
  return !g_force_portable.load() && cpu::has(kNeedAvx2);
#else
  return false;
#endif
}

void exp_shifted(float *x, int64_t n, float shift, bool simd) {
#if BITCPM_X86
  if (simd) {
    exp_shifted_avx2(x, n, shift);
    return;
  }
#endif
  for (int64_t j = 0; j < n; ++j) x[j] = exp_softmax(x[j] - shift);
}

void silu_mul_rows(float *gate, const float *up, int64_t n) {
#if BITCPM_X86
  if (elementwise_simd()) {
    silu_mul_avx2(gate, up, n);
    return;
  }
#endif
  for (int64_t j = 0; j < n; ++j) gate[j] = silu_mul(gate[j], up[j]);
}

void rope_keys(const float *k_in, const float *cos, const float *sin, int64_t B, int64_t KVH, int64_t D,
               float *k_rot) {
  for (int64_t b = 0; b < B; ++b)
    for (int64_t g = 0; g < KVH; ++g)
      rope(k_in + (b * KVH + g) * D, cos + b * D, sin + b * D, k_rot + (b * KVH + g) * D, D);
}

void store_cache_row(KVCacheRef cache, bool value, int64_t offset, const float *src, int64_t n) {
  void *base = const_cast<void *>(value ? cache.v : cache.k);
  if (!cache.half) {
    std::memcpy((float *)base + offset, src, sizeof(float) * n);
    return;
  }
  uint16_t *dst = (uint16_t *)base + offset;
  for (int64_t i = 0; i < n; ++i) dst[i] = float_to_half(src[i]);
}

int cache_dtype(const char *op, int index, const char *dtype, bool *half) {
  *half = dtype_is(dtype, "float16");
  if (!*half && !dtype_is(dtype, "float32"))
    return set_error(3, std::string(op) + ": param " + std::to_string(index) + " (a KV cache) must be float32 or "
                            "float16, got " + dtype);
  return 0;
}

namespace {

// The portable head rows (the SIMD ones are avx2_decode.cpp's gemv_rows_avx2 and half_gemv_rows_f16c).
void gemv_rows(const float *x, const float *W, float *y, int64_t M, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) y[m * N + n] = dot(x + m * K, W + n * K, K);
}

void half_gemv_rows(const float *x, const uint16_t *W, float *y, int64_t M, int64_t K, int64_t N, int64_t n0,
                    int64_t n1) {
  for (int64_t n = n0; n < n1; ++n)
    for (int64_t m = 0; m < M; ++m) {
      const float *a = x + m * K;
      const uint16_t *b = W + n * K;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = 0;
      for (; i + 8 <= K; i += 8)
        for (int u = 0; u < 8; ++u) acc[u] += a[i + u] * half_to_float(b[i + u]);
      float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      for (; i < K; ++i) s += a[i] * half_to_float(b[i]);
      y[m * N + n] = s;
    }
}

}  // namespace

// Shared driver of the float and half-weight head kernels: argument check, one thread below
// min_parallel_work() multiply-adds (a small head is not worth a pool dispatch), rows split over
// threads, the SIMD row function when the CPU has it (simd_ok) and the portable one otherwise.
template <typename WT>
int gemv_nt_driver(const float *x, const WT *W, float *y, int64_t M, int64_t K, int64_t N, int nthreads, bool simd_ok,
                   void (*simd)(const float *, const WT *, float *, int64_t, int64_t, int64_t, int64_t, int64_t),
                   void (*portable)(const float *, const WT *, float *, int64_t, int64_t, int64_t, int64_t, int64_t)) {
  if (M <= 0 || K <= 0 || N <= 0) return set_error(3, "FloatMatmulNT: need M, K, N > 0");
  const int nt = M * K * N < min_parallel_work() ? 1 : resolve_threads(nthreads);
  const auto rows = simd_ok && !g_force_portable.load() ? simd : portable;
  parallel_for(N, nt, 16, [&](int64_t lo, int64_t hi) { rows(x, W, y, M, K, N, lo, hi); });
  return 0;
}

int half_matmul_nt_impl(const float *x, const uint16_t *W, float *y, int64_t M, int64_t K, int64_t N, int nthreads) {
#if BITCPM_X86
  return gemv_nt_driver<uint16_t>(x, W, y, M, K, N, nthreads, cpu::has(kNeedF16c), half_gemv_rows_f16c,
                                  half_gemv_rows);
#else
  return gemv_nt_driver<uint16_t>(x, W, y, M, K, N, nthreads, false, half_gemv_rows, half_gemv_rows);
#endif
}

int float_matmul_nt_impl(const float *x, const float *W, float *y, int64_t M, int64_t K, int64_t N, int nthreads) {
#if BITCPM_X86
  return gemv_nt_driver<float>(x, W, y, M, K, N, nthreads, cpu::has(kNeedAvx2), gemv_rows_avx2, gemv_rows);
#else
  return gemv_nt_driver<float>(x, W, y, M, K, N, nthreads, false, gemv_rows, gemv_rows);
#endif
}

}  // namespace bitcpm

using namespace bitcpm;

// ctypes: q [B,H*D], k [B,KVH*D], v [B,KVH*D], caches [B,KVH,S,D] (float32, or float16 when half_cache),
// pos [B] int32, cos/sin [B,D]; outputs ctx [B,H*D], k_rot [B,KVH*D].
BITCPM_API int bitcpm_decode_attention(const float *q, const float *k, const float *v, const void *k_cache,
                                       const void *v_cache, int half_cache, const int32_t *pos, const float *cos,
                                       const float *sin, float scale, int64_t B, int64_t H, int64_t KVH, int64_t S,
                                       int64_t D, float *ctx, float *k_rot, int nthreads) {
  return decode_attention_impl(q, k, v, KVCacheRef{k_cache, v_cache, half_cache != 0}, pos, cos, sin, scale, B, H,
                               KVH, S, D, ctx, k_rot, nthreads);
}

// ctypes: x[j] = exp_softmax(x[j] - shift), the attention softmax's exp (tested against numpy, and AVX2
// against the portable loop).
BITCPM_API int bitcpm_exp_shifted(float *x, int64_t n, float shift) {
  exp_shifted(x, n, shift, elementwise_simd());
  return 0;
}

// ctypes: gate[j] = silu_mul(gate[j], up[j]), SwiGLU's element-wise step (the layer op's silu_mul_rows).
BITCPM_API int bitcpm_silu_mul(float *gate, const float *up, int64_t n) {
  silu_mul_rows(gate, up, n);
  return 0;
}

// ctypes: n float32 -> binary16, rounded to nearest even (the float16 cache's stores; tested against numpy).
BITCPM_API int bitcpm_float_to_half(const float *x, uint16_t *out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_half(x[i]);
  return 0;
}

// MindSpore AOT. Inputs: q float32 [B,H*D], k float32 [B,KVH*D], v float32 [B,KVH*D],
// k_cache, v_cache [B,KVH,S,D] (both float32 or both float16), positions int32 [B], cos float32 [B,D],
// sin float32 [B,D], spec float32 [1,2] = (scale, H). Outputs: ctx float32 [B,H*D], k_rot float32 [B,KVH*D].
BITCPM_API int DecodeAttention(BITCPM_AOT_ARGS) {
  static const char *const want[11] = {"float32", "float32", "float32", "float32", "float32", "int32",
                                       "float32", "float32", "float32", "float32", "float32"};
  static const int want_ndim[11] = {2, 2, 2, 4, 4, 1, 2, 2, 2, 2, 2};
  if (int rc = check_count("DecodeAttention", nparam, 11, "params")) return rc;
  bool half[2];
  for (int c = 0; c < 2; ++c)
    if (int rc = cache_dtype("DecodeAttention", 3 + c, dtypes[3 + c], &half[c])) return rc;
  if (half[0] != half[1]) return set_error(3, "DecodeAttention: the k and v caches must have one dtype");
  for (int i = 0; i < 11; ++i) {
    if (ndims[i] != want_ndim[i] || !(dtype_is(dtypes[i], want[i]) || i == 3 || i == 4))
      return set_error(3, "DecodeAttention: param " + std::to_string(i) + " must be " + want[i] + " with " +
                              std::to_string(want_ndim[i]) + " dims");
  }
  const int64_t B = shapes[3][0], KVH = shapes[3][1], S = shapes[3][2], D = shapes[3][3];
  const float *spec = (const float *)params[8];
  const int64_t H = (int64_t)spec[1];
  if (shapes[0][0] != B || shapes[0][1] != H * D || shapes[1][1] != KVH * D || shapes[2][1] != KVH * D ||
      shapes[5][0] != B || shapes[6][1] != D || shapes[7][1] != D || shapes[9][1] != H * D ||
      shapes[10][1] != KVH * D)
    return set_error(3, "DecodeAttention: inconsistent shapes");
  return decode_attention_impl((const float *)params[0], (const float *)params[1], (const float *)params[2],
                               KVCacheRef{params[3], params[4], half[0]}, (const int32_t *)params[5],
                               (const float *)params[6], (const float *)params[7], spec[0], B, H, KVH, S, D,
                               (float *)params[9], (float *)params[10], 0);
}

// ctypes: x [M,K], W [N,K] float32 -> y [M,N].
BITCPM_API int bitcpm_float_matmul_nt(const float *x, const float *W, float *y, int64_t M, int64_t K, int64_t N,
                                      int nthreads) {
  return float_matmul_nt_impl(x, W, y, M, K, N, nthreads);
}

// ctypes: x [M,K] float32, W [N,K] float16 (raw binary16) -> y [M,N] float32.
BITCPM_API int bitcpm_half_matmul_nt(const float *x, const uint16_t *W, float *y, int64_t M, int64_t K, int64_t N,
                                     int nthreads) {
  return half_matmul_nt_impl(x, W, y, M, K, N, nthreads);
}

// MindSpore AOT. Inputs x float32 [M,K], W float32 or float16 [N,K]; output y float32 [M,N].
BITCPM_API int FloatMatmulNT(BITCPM_AOT_ARGS) {
  if (int rc = check_count("FloatMatmulNT", nparam, 3, "params")) return rc;
  const bool half = dtype_is(dtypes[1], "float16");
  for (int i = 0; i < 3; ++i)
    if (ndims[i] != 2 || !(dtype_is(dtypes[i], "float32") || (i == 1 && half)))
      return set_error(3, "FloatMatmulNT: x and y must be 2-D float32 tensors, W 2-D float32 or float16");
  const int64_t M = shapes[0][0], K = shapes[0][1], N = shapes[1][0];
  if (shapes[1][1] != K || shapes[2][0] != M || shapes[2][1] != N)
    return set_error(3, "FloatMatmulNT: inconsistent shapes (x [M,K], W [N,K], y [M,N])");
  if (half)
    return half_matmul_nt_impl((const float *)params[0], (const uint16_t *)params[1], (float *)params[2], M, K, N, 0);
  return float_matmul_nt_impl((const float *)params[0], (const float *)params[1], (float *)params[2], M, K, N, 0);
}
