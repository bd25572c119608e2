// Shared declarations of the ternary (1.58-bit) matmul library: packed layout, run-time settings,
// threading, and the entry points of every code path. Translation units per path (portable.cpp,
// avx2*.cpp, avx512.cpp), dispatch.cpp picks the path, c_abi.cpp holds the exported C functions.
//
// Packed layout (must match bitcpm_ms/kernels/packing.py):
//   Each output row n stores K/4 bytes. The K input elements are split into blocks of kBlock = 128
//   (the last block may be shorter: r = K % 128, r % 4 == 0). In a block of B elements with
//   q = B/4 bytes, byte j (0 <= j < q) holds the 2-bit codes u = code + 1 (in {0,1,2}) of the
//   elements t*q + j at bits [2t, 2t+1], t = 0..3 (first slot in the low bits).
//   For full blocks: shifting the 32 bytes right by 2t and masking with 3 yields the 32
//   consecutive codes of elements 32t..32t+31 (a "slot") -- one AVX2 register, no shuffles.
//   Scales: float32 [N, G], group size g = K / G along the input dimension.
//
// Modes:
//   weight-only (act_bits = 0): float32 activations.
//   W1.58A8 (act_bits = 8): per-token int8 activations, s = 127 / max(max|x_row|, eps),
//     xq = clip(nearbyint(x * s), -128, 127); y = (sum_g scale_g * sum_{k in g} xq_k c_k) / s.
//     eps is the floor of the activation quantizer used in training (QuantConfig.eps, 1e-5 by
//     default), passed by the caller so the kernel quantizes exactly like the trained model.
//     The integer group sums are computed exactly in int32.
//
// SIMD functions carry __attribute__((target(...))): the library is built without -march and
// select_path() (dispatch.cpp) chooses a path at run time from the CPU's features
// (ops/common/cpu_features.h; the kNeed* sets below).
// Threads: every (m, n) output is computed by the same sequence of operations whatever the tiling
// or thread split, so results are bit-identical for any thread count (for a given path).
#pragma once

#include <algorithm>
#include <cmath>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "c_abi_util.h"    // set_error (ops/common)
#include "cpu_features.h"  // cpu::has, BITCPM_X86 (ops/common)

namespace bitcpm {

// ---------------------------------------------------------------- packed layout
constexpr int64_t kBlock = 128;     // inputs per packed block (32 bytes)
constexpr int64_t kSlot = 32;       // inputs per 2-bit slot of a full block (kBlock / 4)

// ---------------------------------------------------------------- run-time settings
extern std::atomic<int> g_num_threads;     // 0: std::thread::hardware_concurrency()
extern std::atomic<int> g_force_portable;  // 1: never use a SIMD path
extern std::atomic<int> g_max_isa;         // kIsaBest or kIsaAvx2
constexpr int kIsaBest = 0;                // best the CPU supports
constexpr int kIsaAvx2 = 1;                // at most AVX2+FMA (no AVX-512): tests, benchmarks

// What each SIMD path asks of the CPU (cpu::has): exactly the instruction sets in the target(...)
// of its functions. Keep each in step with its attribute.
constexpr unsigned kNeedAvx2 = cpu::kAvx2 | cpu::kFma;                          // avx2.cpp AVX2_FN
constexpr unsigned kNeedF16c = kNeedAvx2 | cpu::kF16c;                          // avx2.cpp F16C_FN
constexpr unsigned kNeedAvx512 = kNeedAvx2 | cpu::kAvx512F | cpu::kAvx512BW;   // avx512.cpp AVX512_FN
constexpr unsigned kNeedVnni = kNeedAvx512 | cpu::kAvx512Vnni;                  // avx512.cpp VNNI_FN

// ---------------------------------------------------------------- threads (threads.cpp)
int resolve_threads(int requested);  // requested <= 0: the global setting, else all cores
extern std::atomic<int> g_spin_us;  // longest poll per wait inside a SpinSession (0: never poll)
// While one is alive (the decode ops hold one per call), idle pool workers and the waiting caller poll
// instead of sleeping between parallel regions (threads.cpp).
// Below this much work (multiply-adds) a decode kernel stays on the calling thread: 2^18 when a wake-up
// costs tens of microseconds, 2^14 inside a polling spin session.
int64_t min_parallel_work();
struct SpinSession {
  SpinSession();
  ~SpinSession();
  SpinSession(const SpinSession &) = delete;
  SpinSession &operator=(const SpinSession &) = delete;
};
// Runs job(i) for i in [0, n) on the persistent worker pool, job(0) on the calling thread.
// Returns false (and runs nothing) when the pool is busy with another call.
bool pool_run(int n, const std::function<void(int)> &job);

// Run fn(lo, hi) over [0, n) split into contiguous ranges aligned to `align`.
template <class F>
void parallel_for(int64_t n, int nthreads, int64_t align, F fn) {
  int64_t units = (n + align - 1) / align;
  int nt = (int)std::max<int64_t>(1, std::min<int64_t>(nthreads, units));
  if (nt <= 1) {
    fn((int64_t)0, n);
    return;
  }
  auto range = [&](int i, int64_t &lo, int64_t &hi) {
    lo = std::min(n, (units * i / nt) * align);
    hi = std::min(n, (units * (i + 1) / nt) * align);
  };
  std::function<void(int)> job = [&](int i) {
    int64_t lo, hi;
    range(i, lo, hi);
    if (lo < hi) fn(lo, hi);
  };
  if (pool_run(nt, job)) return;
  // Pool busy (e.g. two MindSpore kernels in parallel): fresh threads for this call.
  std::vector<std::thread> ts;
  ts.reserve(nt - 1);
  for (int i = 1; i < nt; ++i) ts.emplace_back([&job, i]() { job(i); });
  job(0);
  for (auto &t : ts) t.join();
}

// ---------------------------------------------------------------- path selection (dispatch.cpp)
enum class Path {
  kPortableF32,
  kAvx2F32,
  kAvx512F32Decode,
  kAvx512F32Prefill,
  kPortableA8,
  kAvx2A8,
  kVnniA8Decode,
  kVnniA8Prefill,
};
constexpr int64_t kF32PrefillMinM = 8;   // AVX-512 weight-only: below this, the decode kernel
constexpr int64_t kVnniPrefillMinM = 5;  // VNNI A8: below this, the decode kernel (packed rows read directly)

// The one place that decides which kernel runs (validated shapes; g = K / G).
Path select_path(int64_t M, int64_t K, int64_t g, int act_bits, bool force_portable);
int validate(int64_t M, int64_t K, int64_t N, int64_t G, int act_bits);
// The A8 paths' per-token activation quantizer: quantize_rows_avx2 where the CPU has AVX2 (and neither
// force_portable nor the global switch says otherwise), else the portable quantize_rows; bit-identical.
void quantize_activations(const float *x, int64_t M, int64_t K, float eps, int8_t *xq, float *s, bool force_portable);
// eps: the activation quantizer's floor (A8 only; ignored for weight-only).
int matmul_impl(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                int64_t G, int act_bits, float eps, int nthreads, int force_portable);
// The same x times `count` packed weights with the same K and G (y[j] = x W[j]^T, [M, N[j]]): the
// activations are prepared (A8: quantized) once and one parallel region covers every output row.
// Each output equals matmul_impl's bit for bit.
int matmul_multi_impl(const float *x, int count, const uint8_t *const *W, const float *const *S, float *const *y,
                      const int64_t *N, int64_t M, int64_t K, int64_t G, int act_bits, float eps, int nthreads);
int dx_impl(const float *dy, const uint8_t *W, const float *S, float *dx, int64_t M, int64_t K, int64_t N, int64_t G,
            int nthreads);
// One layer's KV cache [B, KVH, S, D]: float32, or float16 (raw binary16, llama.cpp's default cache
// type: half the bytes a decode step reads). Attention widens each element to float32 exactly.
struct KVCacheRef {
  const void *k, *v;
  bool half;
};
// decode_ops.cpp: one decode step of RoPE + grouped-query attention over a KV cache. Row b reads cache
// row cache_rows[b] (nullptr: row b), so the tokens of a prompt (PrefillModel) can share one cache row.
int decode_attention_impl(const float *q_in, const float *k_in, const float *v_in, KVCacheRef cache,
                          const int32_t *pos, const float *cos, const float *sin, float scale, int64_t B, int64_t H,
                          int64_t KVH, int64_t S, int64_t D, float *ctx, float *k_rot, int nthreads,
                          const int32_t *cache_rows = nullptr);
// decode_ops.cpp: k_rot [B, KVH*D] = RoPE of k_in [B, KVH*D] at each row's cos / sin [B, D] (what
// decode_attention_impl computes as its k_rot output).
void rope_keys(const float *k_in, const float *cos, const float *sin, int64_t B, int64_t KVH, int64_t D,
               float *k_rot);
// decode_ops.cpp: the element-wise steps' dispatch. elementwise_simd(): the AVX2 forms may run (the CPU
// has them, the portable path is not forced). exp_shifted: x[j] = exp_softmax(x[j] - shift), 8 lanes
// when simd (exp_shifted_avx2, the same bits). silu_mul_rows: gate[j] = silu_mul(gate[j], up[j]), 8
// lanes when elementwise_simd() (silu_mul_avx2, the same bits).
bool elementwise_simd();
void exp_shifted(float *x, int64_t n, float shift, bool simd);
void silu_mul_rows(float *gate, const float *up, int64_t n);
// decode_ops.cpp: store n float32 values into a cache row (float32 as is, float16 rounded to nearest even).
void store_cache_row(KVCacheRef cache, bool value, int64_t offset, const float *src, int64_t n);
// decode_ops.cpp: the decode head, y [M,N] = x [M,K] @ W^T with W float32 or float16 (raw binary16).
int float_matmul_nt_impl(const float *x, const float *W, float *y, int64_t M, int64_t K, int64_t N, int nthreads);
int half_matmul_nt_impl(const float *x, const uint16_t *W, float *y, int64_t M, int64_t K, int64_t N, int nthreads);
// decode_layer.cpp: one packed decoder layer for one decode step (DecodeLayer; spec as layer_spec).
struct PackedProj {  // one packed projection: packed [N, K/4] uint8, scales [N, G] float32
  const uint8_t *packed;
  const float *scales;
  int64_t N, K, G;
};
// proj: wq, wk, wv, wo, w1 (gate), w3 (up), w2 (down). h_out may not alias h.
// cache_rows: as decode_attention_impl's (nullptr: row b uses cache row b).
int decode_layer_impl(const float *h, const float *w_attn_norm, const float *w_ffn_norm, const PackedProj *proj,
                      KVCacheRef cache, const int32_t *pos, const float *cos, const float *sin, const float *spec,
                      int64_t B, int64_t H, int64_t KVH, int64_t S, int64_t D, float *h_out, float *k_rot,
                      float *v_out, const int32_t *cache_rows = nullptr);
// The dtype check of an AOT cache param: "float32" or "float16"; sets *half. 0, or set_error naming it.
int cache_dtype(const char *op, int index, const char *dtype, bool *half);
// The 16 AOT params of one packed layer from index `first`: the attention / FFN RMSNorm weights f32 [H],
// then (packed u8 [N,K/4], scales f32 [N,G]) of the 7 projections; 0, or set_error naming op and param.
int layer_params(const char *op, void **params, const int *ndims, int64_t *const *shapes, const char *const *dtypes,
                 int first, const float **norms, PackedProj *proj);
// decode_model.cpp: the inputs the whole-model ops share (DecodeModel, PrefillModel): 0 token ids
// i32 [B,*]; 1 positions or lengths i32 [B]; 2 model spec f32 [1,8] (scale_emb, final-norm eps,
// logit_scale, steps, 0...); 3 embedding f32 [V,H]; 4, 5 cos / sin f32 [P,D]; 6 final norm f32 [H];
// 7 head f32 or f16 [V,H]; 8 layer specs f32 [L,8] (write_cache set); from 9 + 16 l the 16 weights of
// layer l (layer_params); from 9 + 16 L + 2 l the k / v caches of layer l; the output last.
constexpr int kModelFixed = 9;  // inputs before the per-layer ones
struct ModelArgs {
  const int32_t *ids, *pos;
  const float *model_spec, *embedding, *cos, *sin, *norm, *layer_specs;
  const void *head;
  bool half_head;
  int64_t B, V, H, P, D, L, KVH, S, steps;
  std::vector<const float *> norms;  // [L][2]
  std::vector<PackedProj> proj;      // [L][7]
  std::vector<void *> caches;        // [L][2]: k, v
  bool half_cache = false;           // every cache float16 (else every one float32)
};
// Checks and reads params 0..8, the layers and the caches (not the ids' second dim nor the output). 0,
// or set_error naming op and param.
int model_args(const char *op, int nparam, void **params, const int *ndims, int64_t *const *shapes,
               const char *const *dtypes, ModelArgs *a);
// logits [B,V] = head(rmsnorm(h [B,H]) * logit_scale); x: scratch [B,H].
int model_logits(const ModelArgs &a, const float *h, int64_t B, float *x, float *logits);
// MindFormers' LlamaRMSNorm per row: out = (x * (1 / sqrt(mean(x^2) + eps))) * w.
void rmsnorm_rows(const float *x, const float *w, float eps, int64_t B, int64_t H, float *out);
void fake_quant_impl(const float *w, float *out, int64_t N, int64_t K, int64_t g, float eps);
int quantize_pack_impl(const float *w, int64_t N, int64_t K, int64_t G, float eps, uint8_t *packed, float *scales,
                       int nthreads);

// ---------------------------------------------------------------- portable path (portable.cpp)
// A8 activation preparation, shared by every A8 path.
// Per-token int8 quantization (matches the training-time quantizer bit for bit).
void quantize_rows(const float *x, int64_t M, int64_t K, float eps, int8_t *xq, float *s);
// xsum[m, gi] = sum of xq over group gi of token m (removes the +1 offset of u = code + 1).
void activation_group_sums(const int8_t *xq, int64_t M, int64_t K, int64_t G, int32_t *xsum);

// Kernels over output rows [n0, n1).
void portable_f32(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                  int64_t G, int64_t n0, int64_t n1);
void portable_a8(const int8_t *xq, const float *xs, const uint8_t *W, const float *S, float *y, int64_t M,
                 int64_t K, int64_t N, int64_t G, int64_t n0, int64_t n1);
// dx[:, k0:k1] += dy @ Wq[:, k0:k1] (dx zeroed by the caller).
void portable_dx(const float *dy, const uint8_t *W, const float *S, float *dx, int64_t M, int64_t K, int64_t N,
                 int64_t G, int64_t k0, int64_t k1);
// Ternary fake quantization of one weight row, groups of g inputs.
void fake_quant_row_portable(const float *w, float *out, int64_t K, int64_t g, float eps);
// Quantize latent rows [n0, n1) to ternary codes and pack them (scales [N, G]).
void quantize_pack_rows(const float *w, int64_t K, int64_t G, float eps, uint8_t *packed, float *scales, int64_t n0,
                        int64_t n1);

// IEEE binary16 -> float32, exact (the float16 decode head; F16C's vcvtph2ps gives the same values).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (man << 13);                      // inf / nan
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (man << 13);              // normal: rebias 15 -> 127
  } else if (man == 0) {
    bits = sign;                                                   // +-0
  } else {                                                         // subnormal: normalize
    int e = -1;
    uint32_t m = man;
    do {
      ++e;
      m <<= 1;
    } while ((m & 0x400u) == 0);
    bits = sign | ((uint32_t)(112 - e) << 23) | ((m & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// float32 -> IEEE binary16, rounded to nearest even (numpy's astype(float16), F16C's vcvtps2ph with
// _MM_FROUND_TO_NEAREST_INT): the float16 KV cache's stores. Overflow gives inf, NaN stays NaN.
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, sizeof x);
  const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((ax >> 13) & 0x3ffu);  // NaN, quiet
  if (ax >= 0x47800000u) return sign | 0x7c00u;                                     // >= 65536: inf
  if (ax >= 0x38800000u) {                                                           // a normal half
    uint32_t r = ax - 0x38000000u;                    // rebias the exponent 127 -> 15
    r += 0xfffu + ((r >> 13) & 1u);                   // round the 13 dropped bits to nearest even
    return sign | (uint16_t)(r >> 13);                // a carry may step the exponent, up to inf
  }
  const uint32_t e = ax >> 23;                        // a subnormal half (or zero): units of 2^-24
  if (e < 102) return sign;                           // below 2^-25: rounds to zero
  const uint32_t m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;  // value = m * 2^(e - 150)
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u), halfway = 1u << (shift - 1);
  if (rem > halfway || (rem == halfway && (q & 1u))) ++q;
  return sign | (uint16_t)q;                          // q == 1024 is the smallest normal, as it should be
}

// exp(x) for the attention softmax (x = score - max <= 0 there): Cephes' expf (x = n ln2 + r with ln 2
// in two parts, a degree-5 polynomial in r, ~1 ulp), in plain float operations (no FMA: the library is
// built -ffp-contract=off) so that exp_shifted_avx2 gives the same bits 8 lanes at a time. Clamped to
// +-88.376: below, 2^n underflows to 0 and so does the result. NaN stays NaN. std::exp cost ~15% of a
// decode step's attention.
inline float exp_softmax(float x) {
  if (x != x) return x;
  x = std::min(std::max(x, -88.3762626647949f), 88.3762626647949f);
  const float fx = std::floor(x * 1.44269504088896341f + 0.5f);  // n
  float r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * z + r;
  y = y + 1.0f;
  const int32_t bits = ((int32_t)fx + 127) * (1 << 23);  // 2^n (0 when n = -127)
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

// SwiGLU's silu(g) * u = (g / (1 + exp(-g))) * u with exp_softmax (silu_mul_avx2 gives the same bits).
inline float silu_mul(float g, float u) { return (g / (1.0f + exp_softmax(-g))) * u; }

#if BITCPM_X86
// ---------------------------------------------------------------- AVX2 + FMA path (avx2.cpp, avx2_a8.cpp)
// A chunk is 8 consecutive elements k..k+7 whose codes sit in 8 consecutive bytes at `byte`,
// bits [shift, shift+1]. Chunks are listed in packed order; `grp` is the scale group.
struct Chunk8 {
  int32_t k, byte, shift, grp;
};
std::vector<Chunk8> make_chunks8(int64_t K, int64_t g);

// Weight-only: K % 32 == 0, g % 8 == 0.
void avx2_f32(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N, int64_t G,
              const Chunk8 *ch, int64_t nch, int64_t n0, int64_t n1);
// A8 (avx2_a8.cpp): K % 128 == 0, g % 32 == 0. xstart: a8_group_starts' output where
// avx2_a8_short_groups(g), else unused.
void avx2_a8(const int8_t *xq, const int32_t *xsum, const int16_t *xstart, const float *xs, const uint8_t *W,
             const float *S, float *y, int64_t M, int64_t K, int64_t N, int64_t G, int64_t n0, int64_t n1);
// Groups of one or two whole 128-blocks (g = 128, 256): the AVX2 A8 kernels start each group's int16
// accumulator with the +1 offset's correction instead of adding it in int32 (avx2_a8.cpp).
inline bool avx2_a8_short_groups(int64_t g) { return g == 128 || g == 256; }
// start[(m * G + gi) * 16 + lane], the int16 start of group gi of token m: c = -xsum[m, gi] split over
// lanes 0 and 1 (c >> 1 and c - (c >> 1): |c| <= 32768, so each half fits), the other lanes 0.
void a8_group_starts(const int32_t *xsum, int64_t M, int64_t G, int16_t *start);
// quantize_rows on AVX2, bit-identical (the A8 paths' activation quantizer when the CPU has AVX2).
void quantize_rows_avx2(const float *x, int64_t M, int64_t K, float eps, int8_t *xq, float *s);
// g % 8 == 0.
void fake_quant_row_avx2(const float *w, float *out, int64_t K, int64_t g, float eps);
// Decode head rows [n0, n1) of y [M,N] = x [M,K] @ W^T (decode_ops.cpp drives them): float32 W, and
// float16 W (raw binary16; needs kNeedF16c). Any K.
void gemv_rows_avx2(const float *x, const float *W, float *y, int64_t M, int64_t K, int64_t N, int64_t n0,
                    int64_t n1);
void half_gemv_rows_f16c(const float *x, const uint16_t *W, float *y, int64_t M, int64_t K, int64_t N, int64_t n0,
                         int64_t n1);
// Decode attention inner loops (decode_ops.cpp drives them; bit-identical to its portable loops):
// scores[r * stride + j] = dot8(q_r, k_j) * scale for the rep query heads q [rep, D] and keys k [n, D],
// where dot8 is decode_ops.cpp's dot (8 lane partial sums, mul then add, reduced ((0+1)+(2+3))+((4+5)+(6+7)),
// then the D % 8 tail); and out [D] += sum_j w[j] v_j for v [n, D], j ascending.
// T: float (a float32 cache) or uint16_t (a float16 cache, widened by vcvtph2ps: exact). Both need
// kNeedF16c (avx2_decode.cpp compiles them with F16C_FN).
template <typename T>
void attn_scores_avx2(const float *q, int64_t rep, const T *k, int64_t n, int64_t D, float scale, float *scores,
                      int64_t stride);
template <typename T>
void attn_accumulate_avx2(const float *w, const T *v, int64_t n, int64_t D, float *out);
// out[r * ostride + i] += sum_j w[r * wstride + j] v[j, i] for the rep query heads of one KV head (j
// ascending, as attn_accumulate_avx2 per head): each value row is read once for all of them.
template <typename T>
void attn_accumulate_heads_avx2(const float *w, int64_t wstride, int64_t rep, const T *v, int64_t n, int64_t D,
                                float *out, int64_t ostride);
// x[j] = exp_softmax(x[j] - shift) for j < n, bit-identical to the scalar loop.
void exp_shifted_avx2(float *x, int64_t n, float shift);
// gate[j] = silu_mul(gate[j], up[j]) for j < n, bit-identical to the scalar loop.
void silu_mul_avx2(float *gate, const float *up, int64_t n);

// ---------------------------------------------------------------- AVX-512 paths (avx512.cpp)
constexpr int kPanel = 32;  // output rows unpacked at a time by the VNNI prefill kernel

// Weight-only (kNeedAvx512), K % 128 == 0, g % 32 == 0.
void avx512_f32_decode(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                       int64_t G, int64_t n0, int64_t n1);
void avx512_f32_prefill(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                        int64_t G, int64_t n0, int64_t n1);

// A8 (kNeedVnni). Prefill: any K with g % 4 == 0; bit-identical to portable_a8.
void vnni_a8_prefill(const int8_t *xq, const int32_t *xsum, const float *xs, const uint8_t *W, const float *S,
                     float *y, int64_t M, int64_t K, int64_t N, int64_t G, int64_t n0, int64_t n1);

// Decode: K % 128 == 0, g % 32 == 0. The plan (scale windows) and the permuted activations are
// computed once per call, before the threads start.
struct VnniDecodePlan {
  int64_t nblk = 0, npairs = 0, sw = 1, nwin = 0;
  std::vector<int32_t> gl, gh;
  bool uniform = true;   // gl == gh in every window: one scale per window (g % 256 == 0)
  bool adjacent = true;  // gh == gl + 1 in every window: the two scales are adjacent (g = 128, even blocks)
};
VnniDecodePlan vnni_decode_plan(int64_t K, int64_t g);
// One token: xperm npairs*256 bytes, negc nwin*16 int32.
void vnni_decode_prep(const int8_t *xq, const VnniDecodePlan &pl, int8_t *xperm, int32_t *negc);
void vnni_a8_decode(const int8_t *xperm, const int32_t *negc, const float *xs, const uint8_t *W, const float *S,
                    float *y, int64_t M, int64_t K, int64_t N, int64_t G, const VnniDecodePlan &pl, int64_t n0,
                    int64_t n1);
#endif  // BITCPM_X86

}  // namespace bitcpm
