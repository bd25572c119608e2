// Fused ternary (1.58-bit) quant-matmul for CPU: y[M,N] = x[M,K] @ W^T, W packed 2 bits/weight.
//
// Packed layout (must match bitcpm_ms/kernels/packing.py):
//   Each output row n stores K/4 bytes. The K input elements are split into blocks of 128
//   (the last block may be shorter: r = K % 128, r % 4 == 0). In a block of B elements with
//   q = B/4 bytes, byte j (0 <= j < q) holds the 2-bit codes u = code + 1 (in {0,1,2}) of the
//   elements t*q + j at bits [2t, 2t+1], t = 0..3 (first slot in the low bits).
//   For full blocks: shifting the 32 bytes right by 2t and masking with 3 yields the 32
//   consecutive codes of elements 32t..32t+31 -- one AVX2 register, no shuffles.
//   Scales: float32 [N, G], group size g = K / G along the input dimension.
//
// Modes:
//   weight-only (act_bits = 0): float32 activations.
//   W1.58A8 (act_bits = 8): per-token int8 activations, s = 127 / max(max|x_row|, 1e-5),
//     xq = clip(nearbyint(x * s), -128, 127); y = (sum_g scale_g * sum_{k in g} xq_k c_k) / s.
//     The integer group sums are computed exactly in int32.
//
// Paths (selected at run time with __builtin_cpu_supports; the library is built without -march):
//   AVX-512 (avx512f+avx512bw, + avx512vnni for A8): A8 decode (M < 5) and prefill (M >= 5, bit-
//     identical to the portable path), weight-only decode (M < 8) and prefill (M >= 8);
//   AVX2+FMA; portable C++. bitcpm_set_force_portable(1) / force_portable select the portable
//   path; bitcpm_set_max_isa(1) caps at AVX2 (tests, benchmarks).
// Threads: std::thread over output rows n; every (m, n) output is computed by the same
// sequence of operations whatever the tiling or thread split, so results are bit-identical
// for any thread count (for a given path).
//
// Entry points:
//   ctypes:  bitcpm_ternary_matmul(...), bitcpm_ternary_matmul_dx(...), settings functions.
//   MindSpore AOT (ops.Custom func_type="aot"): TernaryMatmulW, TernaryMatmulA8,
//     TernaryMatmulDx. Signature: int F(int nparam, void **params, int *ndims,
//     int64_t **shapes, const char **dtypes, void *stream, void *extra); nonzero on error.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define BITCPM_X86 1
#else
#define BITCPM_X86 0
#endif

namespace {

std::atomic<int> g_num_threads{0};     // 0: std::thread::hardware_concurrency()
std::atomic<int> g_force_portable{0};  // 1: never use the AVX2 path
std::atomic<int> g_max_isa{0};         // 0: best available; 1: at most AVX2 (no AVX-512 VNNI)
std::mutex g_err_mu;
std::string g_err;

int set_error(int code, const std::string &msg) {
  std::lock_guard<std::mutex> lk(g_err_mu);
  g_err = msg;
  return code;
}

int resolve_threads(int requested) {
  int n = requested > 0 ? requested : g_num_threads.load();
  if (n <= 0) {
    n = (int)std::thread::hardware_concurrency();
    if (n <= 0) n = 1;
  }
  return n;
}

bool cpu_has_avx2() {
#if BITCPM_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if BITCPM_X86
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && cpu_has_avx2();
  return ok;
#else
  return false;
#endif
}

bool cpu_has_vnni() {
#if BITCPM_X86
  static const bool ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512vnni") && cpu_has_avx2();
  return ok;
#else
  return false;
#endif
}

// Persistent worker pool (threads are reused across calls: spawning threads per call costs tens
// of microseconds, comparable to a whole decode-size matmul). One job at a time; a caller that
// finds the pool busy (e.g. two MindSpore kernels in parallel) falls back to fresh std::threads.
class Pool {
 public:
  static Pool &get() {
    static Pool *p = new Pool();  // leaked on purpose: no join at process exit
    return *p;
  }
  // Runs job(i) for i in [0, n); job(0) on the calling thread. Returns false if busy.
  bool run(int n, const std::function<void(int)> &job) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    if (owner_ != getpid()) {  // forked child: the parent's workers do not exist here
      workers_.clear();
      owner_ = getpid();
    }
    ensure(n - 1);
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &job;
      active_ = n - 1;
      pending_ = n - 1;
      ++gen_;
    }
    cv_.notify_all();
    job(0);
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
    return true;
  }

 private:
  void ensure(int n) {
    while ((int)workers_.size() < n) {
      int idx = (int)workers_.size() + 1;
      uint64_t seen;
      {
        std::lock_guard<std::mutex> lk(mu_);
        seen = gen_;  // generation before the job that needs this worker
      }
      workers_.emplace_back([this, idx, seen] { loop(idx, seen); });
      workers_.back().detach();
    }
  }
  void loop(int idx, uint64_t seen) {
    for (;;) {
      const std::function<void(int)> *job;
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return gen_ != seen; });
        seen = gen_;
        if (idx > active_) continue;
        job = job_;
      }
      (*job)(idx);
      std::lock_guard<std::mutex> lk(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
  std::mutex run_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int)> *job_ = nullptr;
  int active_ = 0, pending_ = 0;
  uint64_t gen_ = 0;
  pid_t owner_ = getpid();
};

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
  if (Pool::get().run(nt, job)) return;
  std::vector<std::thread> ts;
  ts.reserve(nt - 1);
  for (int i = 1; i < nt; ++i) ts.emplace_back([&job, i]() { job(i); });
  job(0);
  for (auto &t : ts) t.join();
}

// Position of element k of a row in the packed layout.
inline void locate(int64_t K, int64_t k, int64_t &byte, int &shift) {
  int64_t base = (k / 128) * 128;
  int64_t B = std::min<int64_t>(128, K - base);
  int64_t q = B / 4;
  int64_t off = k - base;
  byte = base / 4 + off % q;
  shift = (int)(2 * (off / q));
}

// Decode one packed row into int8 codes in {-1, 0, 1}.
void decode_row(const uint8_t *prow, int64_t K, int8_t *codes) {
  for (int64_t base = 0; base < K; base += 128) {
    int64_t B = std::min<int64_t>(128, K - base);
    int64_t q = B / 4;
    const uint8_t *p = prow + base / 4;
    for (int t = 0; t < 4; ++t)
      for (int64_t j = 0; j < q; ++j) codes[base + t * q + j] = (int8_t)(((p[j] >> (2 * t)) & 3) - 1);
  }
}

// Per-token int8 quantization (matches the training-time quantizer bit for bit).
void quantize_rows(const float *x, int64_t M, int64_t K, int8_t *xq, float *s) {
  for (int64_t m = 0; m < M; ++m) {
    const float *xr = x + m * K;
    float amax = 0.0f;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
    float sm = 127.0f / std::max(amax, 1e-5f);
    s[m] = sm;
    int8_t *qr = xq + m * K;
    for (int64_t k = 0; k < K; ++k) {
      float v = std::nearbyint(xr[k] * sm);
      v = std::min(127.0f, std::max(-128.0f, v));
      qr[k] = (int8_t)v;
    }
  }
}

// ---------------------------------------------------------------- portable path
void portable_f32(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K,
                  int64_t N, int64_t G, int64_t n0, int64_t n1) {
  const int64_t g = K / G;
  std::vector<int8_t> c(K);
  for (int64_t n = n0; n < n1; ++n) {
    decode_row(W + n * (K / 4), K, c.data());
    const float *sr = S + n * G;
    for (int64_t m = 0; m < M; ++m) {
      const float *xr = x + m * K;
      float acc = 0.0f;
      for (int64_t gi = 0; gi < G; ++gi) {
        float gs = 0.0f;  // add where code is +1, subtract where -1
        for (int64_t k = gi * g; k < (gi + 1) * g; ++k) {
          if (c[k] > 0)
            gs += xr[k];
          else if (c[k] < 0)
            gs -= xr[k];
        }
        acc += gs * sr[gi];
      }
      y[m * N + n] = acc;
    }
  }
}

void portable_a8(const int8_t *xq, const float *xs, const uint8_t *W, const float *S, float *y, int64_t M,
                 int64_t K, int64_t N, int64_t G, int64_t n0, int64_t n1) {
  const int64_t g = K / G;
  std::vector<int8_t> c(K);
  for (int64_t n = n0; n < n1; ++n) {
    decode_row(W + n * (K / 4), K, c.data());
    const float *sr = S + n * G;
    for (int64_t m = 0; m < M; ++m) {
      const int8_t *xr = xq + m * K;
      float acc = 0.0f;
      for (int64_t gi = 0; gi < G; ++gi) {
        int32_t is = 0;
        for (int64_t k = gi * g; k < (gi + 1) * g; ++k) is += (int32_t)xr[k] * (int32_t)c[k];
        acc += (float)is * sr[gi];
      }
      y[m * N + n] = acc / xs[m];
    }
  }
}

// ---------------------------------------------------------------- AVX2 path
#if BITCPM_X86
#define AVX2_FN __attribute__((target("avx2,fma")))

// A chunk is 8 consecutive elements k..k+7 whose codes sit in 8 consecutive bytes at `byte`,
// bits [shift, shift+1]. Chunks are listed in packed order; `grp` is the scale group.
struct Chunk8 {
  int32_t k, byte, shift, grp;
};

std::vector<Chunk8> make_chunks8(int64_t K, int64_t g) {
  std::vector<Chunk8> ch;
  ch.reserve(K / 8);
  for (int64_t base = 0; base < K; base += 128) {
    int64_t B = std::min<int64_t>(128, K - base);
    int64_t q = B / 4;
    for (int t = 0; t < 4; ++t)
      for (int64_t j = 0; j < q; j += 8) {
        int64_t k = base + t * q + j;
        ch.push_back({(int32_t)k, (int32_t)(base / 4 + j), 2 * t, (int32_t)(k / g)});
      }
  }
  return ch;
}

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

// A8 tile. Full 128-blocks only: chunk (block b, slot t) = 32 consecutive elements.
// u = code + 1 in {0,1,2} (unsigned) times xq (signed) with maddubs: int16 pair sums in
// [-512, 508], accumulated in int16 for at most 32 chunks (|sum| <= 16384, no overflow), then
// widened to int32 with madd. The +1 offset is removed by adding -sum(xq over the group) (lane 0).
// Group sums are exact int32; converted to float and scaled once per group; / s_token at the end.
template <int MR, int NR>
AVX2_FN void tile_a8(const int8_t *xq, const int32_t *xsum, const float *xs, int64_t K, const uint8_t *W,
                     int64_t ldw, const float *S, int64_t G, int64_t g, float *y, int64_t ldy) {
  __m256 facc[MR][NR];
  __m256i acc16[MR][NR];
  __m256i acc32[MR][NR];
  const __m256i mask3 = _mm256_set1_epi8(3);
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) {
      facc[i][r] = _mm256_setzero_ps();
      acc16[i][r] = _mm256_setzero_si256();
      acc32[i][r] = _mm256_setr_epi32(-xsum[i * G + 0], 0, 0, 0, 0, 0, 0, 0);
    }
  const int64_t cpg = g / 32;  // chunks per group
  int64_t gi = 0, left = cpg, left16 = std::min<int64_t>(cpg, 32);
  for (int64_t b = 0; b < K / 128; ++b) {
    __m256i bytes[NR];
    for (int r = 0; r < NR; ++r) bytes[r] = _mm256_loadu_si256((const __m256i *)(W + r * ldw + b * 32));
    for (int t = 0; t < 4; ++t) {
      const int64_t k = b * 128 + t * 32;
      __m256i xv[MR];
      for (int i = 0; i < MR; ++i) xv[i] = _mm256_loadu_si256((const __m256i *)(xq + i * K + k));
      for (int r = 0; r < NR; ++r) {
        __m256i u = t == 0 ? _mm256_and_si256(bytes[r], mask3)
                           : _mm256_and_si256(_mm256_srli_epi16(bytes[r], 2 * t), mask3);
        for (int i = 0; i < MR; ++i) acc16[i][r] = _mm256_add_epi16(acc16[i][r], _mm256_maddubs_epi16(u, xv[i]));
      }
      --left;
      if (--left16 == 0 || left == 0) {  // widen int16 partial sums
        for (int i = 0; i < MR; ++i)
          for (int r = 0; r < NR; ++r) {
            acc32[i][r] = _mm256_add_epi32(acc32[i][r], _mm256_madd_epi16(acc16[i][r], ones16));
            acc16[i][r] = _mm256_setzero_si256();
          }
        left16 = std::min<int64_t>(left, 32);
      }
      if (left == 0) {  // end of group gi: scale and restart
        for (int r = 0; r < NR; ++r) {
          __m256 sc = _mm256_set1_ps(S[r * G + gi]);
          for (int i = 0; i < MR; ++i) facc[i][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc32[i][r]), sc, facc[i][r]);
        }
        ++gi;
        left = cpg;
        left16 = std::min<int64_t>(cpg, 32);
        if (gi < G)
          for (int i = 0; i < MR; ++i)
            for (int r = 0; r < NR; ++r) acc32[i][r] = _mm256_setr_epi32(-xsum[i * G + gi], 0, 0, 0, 0, 0, 0, 0);
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) y[i * ldy + r] = hsum256(facc[i][r]) / xs[i];
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

template <int MR, int NR>
void run_a8_tiles(const int8_t *xq, const int32_t *xsum, const float *xs, const uint8_t *W, const float *S,
                  float *y, int64_t K, int64_t N, int64_t G, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  const int64_t ldw = K / 4, g = K / G;
  int64_t m = m0;
  for (; m + MR <= m1; m += MR) {
    int64_t n = n0;
    for (; n + NR <= n1; n += NR)
      tile_a8<MR, NR>(xq + m * K, xsum + m * G, xs + m, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n, N);
    for (; n < n1; ++n)
      tile_a8<MR, 1>(xq + m * K, xsum + m * G, xs + m, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n, N);
  }
  for (; m < m1; ++m) {
    int64_t n = n0;
    for (; n + NR <= n1; n += NR)
      tile_a8<1, NR>(xq + m * K, xsum + m * G, xs + m, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n, N);
    for (; n < n1; ++n)
      tile_a8<1, 1>(xq + m * K, xsum + m * G, xs + m, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n, N);
  }
}

void avx2_a8(const int8_t *xq, const int32_t *xsum, const float *xs, const uint8_t *W, const float *S, float *y,
             int64_t M, int64_t K, int64_t N, int64_t G, int64_t n0, int64_t n1) {
  if (M < 2) {
    run_a8_tiles<1, 4>(xq, xsum, xs, W, S, y, K, N, G, 0, M, n0, n1);
    return;
  }
  const int64_t MB = 64;
  for (int64_t m0 = 0; m0 < M; m0 += MB) {
    int64_t m1 = std::min(M, m0 + MB);
    for (int64_t nb = n0; nb < n1; nb += 48)
      run_a8_tiles<2, 2>(xq, xsum, xs, W, S, y, K, N, G, m0, m1, nb, std::min(n1, nb + 48));
  }
}

// ---------------------------------------------------------------- AVX-512 VNNI path (A8 only)
// Selected at run time when avx512f+avx512bw+avx512vnni are present (and neither force_portable
// nor bitcpm_set_max_isa(1)). vpdpbusd multiplies unsigned u = code+1 in {0,1,2} (u8 operand) by
// int8 activations (s8 operand) and adds groups of 4 products into int32 lanes; the +1 offset is
// removed with the activation sum, so every per-group integer sum is exact.
#define VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma")))

// Prefill (M >= 3, any K % 4 == 0 with g % 4 == 0): a panel of 32 output rows is unpacked once to
// u bytes in the layout P[k/4][row][4] (one dword = 4 consecutive inputs of one row), so that one
// 64-byte load holds 4 inputs of 16 rows and the activation dword is broadcast: lanes = rows, no
// horizontal sums. Micro-tile: MR tokens x 32 rows (2 x 16 lanes), int32 accumulators per group.
// Float math per output, in group order: acc = acc + (float)isum_g * scale_g (mul, then add), then
// acc / s_token -- the same operations as the portable path, so the results are bit-identical to it.
constexpr int kPanel = 32;
constexpr int64_t kVnniPrefillMinM = 5;  // below this, the decode kernel (packed rows read directly)

// In-place transpose of a 16x16 matrix of 32-bit lanes: r[i] lane j -> r[j] lane i.
VNNI_FN inline void transpose16(__m512i *r) {
  __m512 t[16], u[16];
  for (int i = 0; i < 8; ++i) {
    const __m512 a = _mm512_castsi512_ps(r[2 * i]), b = _mm512_castsi512_ps(r[2 * i + 1]);
    t[2 * i] = _mm512_unpacklo_ps(a, b);
    t[2 * i + 1] = _mm512_unpackhi_ps(a, b);
  }
  for (int i = 0; i < 4; ++i) {
    u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  // u[4i+c] lane (4*L + j) = element (row 4i + j, col 4*L + c)
  for (int i = 0; i < 2; ++i)
    for (int c = 0; c < 4; ++c) {
      t[8 * i + c] = _mm512_shuffle_f32x4(u[8 * i + c], u[8 * i + 4 + c], 0x88);
      t[8 * i + 4 + c] = _mm512_shuffle_f32x4(u[8 * i + c], u[8 * i + 4 + c], 0xDD);
    }
  for (int c = 0; c < 8; ++c) {
    r[c] = _mm512_castps_si512(_mm512_shuffle_f32x4(t[c], t[8 + c], 0x88));
    r[8 + c] = _mm512_castps_si512(_mm512_shuffle_f32x4(t[c], t[8 + c], 0xDD));
  }
}

// Full 128-blocks (K % 128 == 0): per row and block, the u bytes of slots (0,1) and (2,3) are two
// zmm of 16 dwords (k/4 = 0..15 and 16..31 of the block): broadcast the 32 packed bytes to both
// halves, shift by 0/2 (4/6) bits per half, mask; 16 rows are then transposed so that each store
// writes one k/4 position of 16 rows.
VNNI_FN void vnni_unpack_panel_full(const uint8_t *W, int64_t ldw, int64_t K, int nr, uint32_t *P) {
  const __m512i m3 = _mm512_set1_epi8(3);
  const __m512i c01 = _mm512_setr_epi64(0, 0, 0, 0, 0x0002000200020002ll, 0x0002000200020002ll,
                                        0x0002000200020002ll, 0x0002000200020002ll);
  const __m512i c23 = _mm512_add_epi16(c01, _mm512_set1_epi16(4));
  for (int h = 0; h < 2; ++h)
    for (int64_t b = 0; b < K / 128; ++b) {
      __m512i v0[16], v1[16];
      for (int r = 0; r < 16; ++r) {
        const int rr = h * 16 + r;
        if (rr < nr) {
          const __m512i pb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(W + rr * ldw + b * 32)));
          v0[r] = _mm512_and_si512(_mm512_srlv_epi16(pb, c01), m3);
          v1[r] = _mm512_and_si512(_mm512_srlv_epi16(pb, c23), m3);
        } else {
          v0[r] = v1[r] = _mm512_setzero_si512();
        }
      }
      transpose16(v0);
      transpose16(v1);
      uint32_t *dst = P + (b * 32) * kPanel + h * 16;
      for (int j = 0; j < 16; ++j) {
        _mm512_storeu_si512((void *)(dst + j * kPanel), v0[j]);
        _mm512_storeu_si512((void *)(dst + (16 + j) * kPanel), v1[j]);
      }
    }
}

VNNI_FN void vnni_unpack_panel(const uint8_t *W, int64_t ldw, int64_t K, int nr, uint32_t *P) {
  if (K % 128 == 0) {
    vnni_unpack_panel_full(W, ldw, K, nr, P);
    return;
  }
  const int64_t K4 = K / 4;
  if (nr < kPanel) std::memset(P, 0, sizeof(uint32_t) * K4 * kPanel);
  const __m256i m3 = _mm256_set1_epi8(3);
  alignas(64) uint32_t tmp[32];
  for (int r = 0; r < nr; ++r) {
    const uint8_t *prow = W + r * ldw;
    for (int64_t base = 0; base < K; base += 128) {
      const int64_t B = std::min<int64_t>(128, K - base), q = B / 4;
      const uint8_t *p = prow + base / 4;
      if (B == 128) {
        const __m256i b = _mm256_loadu_si256((const __m256i *)p);
        _mm256_store_si256((__m256i *)(tmp + 0), _mm256_and_si256(b, m3));
        _mm256_store_si256((__m256i *)(tmp + 8), _mm256_and_si256(_mm256_srli_epi16(b, 2), m3));
        _mm256_store_si256((__m256i *)(tmp + 16), _mm256_and_si256(_mm256_srli_epi16(b, 4), m3));
        _mm256_store_si256((__m256i *)(tmp + 24), _mm256_and_si256(_mm256_srli_epi16(b, 6), m3));
      } else {
        uint8_t *tb = (uint8_t *)tmp;
        for (int t = 0; t < 4; ++t)
          for (int64_t j = 0; j < q; ++j) tb[t * q + j] = (uint8_t)((p[j] >> (2 * t)) & 3);
      }
      uint32_t *dst = P + (base / 4) * kPanel + r;
      for (int64_t j = 0; j < B / 4; ++j) dst[j * kPanel] = tmp[j];
    }
  }
}

template <int MR>
VNNI_FN void vnni_tile_prefill(const int8_t *xq, int64_t K, const int32_t *xsum, const float *xs, int64_t G,
                               int64_t g, const uint32_t *P, const float *St, float *y, int64_t ldy, int nr) {
  __m512 f[MR][2];
  __m512i a[MR][2];
  for (int i = 0; i < MR; ++i) f[i][0] = f[i][1] = _mm512_setzero_ps();
  const int64_t g4 = g / 4;
  for (int64_t gi = 0; gi < G; ++gi) {
    for (int i = 0; i < MR; ++i) a[i][0] = a[i][1] = _mm512_setzero_si512();
    const uint32_t *pp = P + gi * g4 * kPanel;
    const int8_t *xk = xq + gi * g;
    for (int64_t j = 0; j < g4; ++j) {
      const __m512i w0 = _mm512_loadu_si512((const void *)(pp + j * kPanel));
      const __m512i w1 = _mm512_loadu_si512((const void *)(pp + j * kPanel + 16));
      for (int i = 0; i < MR; ++i) {
        int32_t xv;
        std::memcpy(&xv, xk + i * K + 4 * j, 4);
        const __m512i xb = _mm512_set1_epi32(xv);
        a[i][0] = _mm512_dpbusd_epi32(a[i][0], w0, xb);
        a[i][1] = _mm512_dpbusd_epi32(a[i][1], w1, xb);
      }
    }
    const __m512 s0 = _mm512_loadu_ps(St + gi * kPanel), s1 = _mm512_loadu_ps(St + gi * kPanel + 16);
    for (int i = 0; i < MR; ++i) {
      const __m512i c = _mm512_set1_epi32(xsum[i * G + gi]);
      f[i][0] = _mm512_add_ps(f[i][0], _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a[i][0], c)), s0));
      f[i][1] = _mm512_add_ps(f[i][1], _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(a[i][1], c)), s1));
    }
  }
  const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : ((1u << nr) - 1));
  const __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : ((1u << (nr - 16)) - 1));
  for (int i = 0; i < MR; ++i) {
    const __m512 d = _mm512_set1_ps(xs[i]);
    _mm512_mask_storeu_ps(y + i * ldy, m0, _mm512_div_ps(f[i][0], d));
    _mm512_mask_storeu_ps(y + i * ldy + 16, m1, _mm512_div_ps(f[i][1], d));
  }
}

void vnni_a8_prefill(const int8_t *xq, const int32_t *xsum, const float *xs, const uint8_t *W, const float *S,
                     float *y, int64_t M, int64_t K, int64_t N, int64_t G, int64_t n0, int64_t n1) {
  const int64_t ldw = K / 4, g = K / G;
  std::vector<uint32_t> P((size_t)(K / 4) * kPanel);
  std::vector<float> St((size_t)G * kPanel);
  constexpr int MR = 6;
  for (int64_t n = n0; n < n1; n += kPanel) {
    const int nr = (int)std::min<int64_t>(kPanel, n1 - n);
    vnni_unpack_panel(W + n * ldw, ldw, K, nr, P.data());
    for (int64_t gi = 0; gi < G; ++gi)
      for (int r = 0; r < kPanel; ++r) St[gi * kPanel + r] = r < nr ? S[(n + r) * G + gi] : 0.0f;
    int64_t m = 0;
    for (; m + MR <= M; m += MR)
      vnni_tile_prefill<MR>(xq + m * K, K, xsum + m * G, xs + m, G, g, P.data(), St.data(), y + m * N + n, N, nr);
    const int64_t rest = M - m;
    const int8_t *xr = xq + m * K;
    const int32_t *sr = xsum + m * G;
    float *yr = y + m * N + n;
    switch (rest) {
      case 5: vnni_tile_prefill<5>(xr, K, sr, xs + m, G, g, P.data(), St.data(), yr, N, nr); break;
      case 4: vnni_tile_prefill<4>(xr, K, sr, xs + m, G, g, P.data(), St.data(), yr, N, nr); break;
      case 3: vnni_tile_prefill<3>(xr, K, sr, xs + m, G, g, P.data(), St.data(), yr, N, nr); break;
      case 2: vnni_tile_prefill<2>(xr, K, sr, xs + m, G, g, P.data(), St.data(), yr, N, nr); break;
      case 1: vnni_tile_prefill<1>(xr, K, sr, xs + m, G, g, P.data(), St.data(), yr, N, nr); break;
      default: break;
    }
  }
}

// Decode (small M; K % 128 == 0, g % 32 == 0): reads the packed rows directly. One 64-byte load
// covers blocks 2p and 2p+1 of a row; shifting by 2t and masking gives the u bytes of slot t of
// both blocks (low/high 256 bits). The activations are permuted once per call into the same order
// (xperm[p][t][half][32]), so each activation vector is reused across NR rows. int32 lanes are
// flushed at every "window" (a run of slot steps in which each half lies in one scale group):
// lanes start at -(lane activation sum over the window) (the +1 correction), are converted to
// float and multiplied by the group scale of their half; per-lane float sums, one horizontal sum
// at the end, / s_token. (Float order differs from the portable path: within the test tolerance.)
struct VnniDecodePlan {
  int64_t nblk = 0, npairs = 0, sw = 1, nwin = 0;
  std::vector<int32_t> gl, gh;
};

VnniDecodePlan vnni_decode_plan(int64_t K, int64_t g) {
  VnniDecodePlan pl;
  pl.nblk = K / 128;
  pl.npairs = (pl.nblk + 1) / 2;
  pl.sw = g % 256 == 0 ? 4 * (g / 256) : g % 128 == 0 ? 4 : g % 64 == 0 ? 2 : 1;
  pl.nwin = pl.npairs * 4 / pl.sw;
  pl.gl.resize(pl.nwin);
  pl.gh.resize(pl.nwin);
  for (int64_t w = 0; w < pl.nwin; ++w) {
    const int64_t s0 = w * pl.sw, p = s0 / 4, t = s0 % 4;
    const int64_t klo = 2 * p * 128 + 32 * t, khi = klo + 128;
    pl.gl[w] = (int32_t)(klo / g);
    pl.gh[w] = (int32_t)(khi < K ? khi / g : klo / g);
  }
  return pl;
}

// xperm: npairs*256 bytes; negc: nwin*16 int32.
void vnni_decode_prep(const int8_t *xq, int64_t K, const VnniDecodePlan &pl, int8_t *xperm, int32_t *negc) {
  for (int64_t p = 0; p < pl.npairs; ++p)
    for (int t = 0; t < 4; ++t)
      for (int h = 0; h < 2; ++h) {
        int8_t *d = xperm + p * 256 + t * 64 + h * 32;
        const int64_t blk = 2 * p + h;
        if (blk < pl.nblk)
          std::memcpy(d, xq + blk * 128 + 32 * t, 32);
        else
          std::memset(d, 0, 32);
      }
  for (int64_t w = 0; w < pl.nwin; ++w)
    for (int l = 0; l < 16; ++l) {
      int32_t s = 0;
      for (int64_t st = w * pl.sw; st < (w + 1) * pl.sw; ++st)
        for (int b = 0; b < 4; ++b) s += xperm[st * 64 + 4 * l + b];
      negc[w * 16 + l] = -s;
    }
}

template <int NR>
VNNI_FN void vnni_tile_decode(const int8_t *xp, const int32_t *negc, float xs, const uint8_t *W, int64_t ldw,
                              const float *S, int64_t G, const VnniDecodePlan &pl, float *y) {
  __m512 f[NR];
  __m512i a[NR];
  const __m512i m3 = _mm512_set1_epi8(3);
  const __m512i c0 = _mm512_loadu_si512((const void *)negc);
  for (int r = 0; r < NR; ++r) {
    f[r] = _mm512_setzero_ps();
    a[r] = c0;
  }
  const int32_t *gl = pl.gl.data(), *gh = pl.gh.data();
  const int64_t sw = pl.sw, nwin = pl.nwin, npairs = pl.npairs;
  const bool odd = pl.nblk % 2 != 0;
  int64_t w = 0, cnt = 0;
  for (int64_t p = 0; p < npairs; ++p) {
    __m512i b[NR];
    if (odd && p == npairs - 1) {
      for (int r = 0; r < NR; ++r) b[r] = _mm512_maskz_loadu_epi8((__mmask64)0xFFFFFFFFull, W + r * ldw + p * 64);
    } else {
      for (int r = 0; r < NR; ++r) b[r] = _mm512_loadu_si512((const void *)(W + r * ldw + p * 64));
    }
    const int8_t *xb = xp + p * 256;
    for (int t = 0; t < 4; ++t) {
      const __m512i xv = _mm512_loadu_si512((const void *)(xb + t * 64));
      for (int r = 0; r < NR; ++r) {
        const __m512i u = t == 0 ? _mm512_and_si512(b[r], m3) : _mm512_and_si512(_mm512_srli_epi16(b[r], 2 * t), m3);
        a[r] = _mm512_dpbusd_epi32(a[r], u, xv);
      }
      if (++cnt == sw) {
        cnt = 0;
        for (int r = 0; r < NR; ++r) {
          const __m512 sc = _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_set1_ps(S[r * G + gl[w]]),
                                                 _mm512_set1_ps(S[r * G + gh[w]]));
          f[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[r]), sc, f[r]);
        }
        ++w;
        if (w < nwin) {
          const __m512i c = _mm512_loadu_si512((const void *)(negc + w * 16));
          for (int r = 0; r < NR; ++r) a[r] = c;
        }
      }
    }
  }
  for (int r = 0; r < NR; ++r) y[r] = _mm512_reduce_add_ps(f[r]) / xs;
}

void vnni_a8_decode(const int8_t *xperm, const int32_t *negc, const float *xs, const uint8_t *W, const float *S,
                    float *y, int64_t M, int64_t K, int64_t N, int64_t G, const VnniDecodePlan &pl, int64_t n0,
                    int64_t n1) {
  const int64_t ldw = K / 4;
  constexpr int NR = 4;
  for (int64_t m = 0; m < M; ++m) {
    const int8_t *xp = xperm + m * pl.npairs * 256;
    const int32_t *nc = negc + m * pl.nwin * 16;
    int64_t n = n0;
    for (; n + NR <= n1; n += NR) vnni_tile_decode<NR>(xp, nc, xs[m], W + n * ldw, ldw, S + n * G, G, pl, y + m * N + n);
    for (; n < n1; ++n) vnni_tile_decode<1>(xp, nc, xs[m], W + n * ldw, ldw, S + n * G, G, pl, y + m * N + n);
  }
}

// ---------------------------------------------------------------- AVX-512 weight-only prefill
// M >= kF32PrefillMinM, K % 128 == 0, g % 32 == 0. For a block of up to 24 tokens and a panel of 4
// output rows, the packed rows are expanded once to float32 w = code * scale (exact: -s, 0 or s;
// 16-entry permute table indexed by 4 bits of the shifted byte, pattern {-s, 0, s, 0} x 4) in a
// small row-major buffer, then a 6-token x 4-row register tile accumulates x * w with FMA in 16
// lanes over k (lane l holds k = l mod 16) and reduces each output once at the end. The float
// order per output is fixed (independent of tiling and threads), but it differs from the
// group-sum order of the portable path: within the tests' float32 bound.
#define AVX512_FN __attribute__((target("avx512f,avx512bw,avx2,fma")))
constexpr int64_t kF32PrefillMinM = 8;

AVX512_FN void f32_unpack_rows(const uint8_t *W, int64_t ldw, const float *S, int64_t G, int64_t g, int64_t K,
                               int nr, float *P) {
  for (int r = 0; r < nr; ++r) {
    const uint8_t *prow = W + r * ldw;
    float *dst = P + r * K;
    for (int64_t b = 0; b < K / 128; ++b) {
      const __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(prow + b * 32)));
      const __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(prow + b * 32 + 16)));
      for (int t = 0; t < 4; ++t) {
        const float sc = S[r * G + (b * 128 + t * 32) / g];
        const __m512 lut = _mm512_setr_ps(-sc, 0.f, sc, 0.f, -sc, 0.f, sc, 0.f, -sc, 0.f, sc, 0.f, -sc, 0.f, sc, 0.f);
        _mm512_storeu_ps(dst + b * 128 + t * 32, _mm512_permutexvar_ps(_mm512_srli_epi32(v0, 2 * t), lut));
        _mm512_storeu_ps(dst + b * 128 + t * 32 + 16, _mm512_permutexvar_ps(_mm512_srli_epi32(v1, 2 * t), lut));
      }
    }
  }
}

// Weight-only decode (M < kF32PrefillMinM, K % 128 == 0, g % 32 == 0), AVX-512 version of
// tile_f32_gemv: 16 weights per permute/FMA (16-entry table {-s, 0, s, 0} x 4 indexed by 4 bits of
// the shifted byte), two accumulators per row, one horizontal sum per output.
template <int NR>
AVX512_FN void f32_gemv512(const float *x, int64_t K, const uint8_t *W, int64_t ldw, const float *S, int64_t G,
                           int64_t g, float *y) {
  __m512 acc0[NR], acc1[NR];
  for (int r = 0; r < NR; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  const __m512 base = _mm512_setr_ps(-1.f, 0.f, 1.f, 0.f, -1.f, 0.f, 1.f, 0.f, -1.f, 0.f, 1.f, 0.f, -1.f, 0.f, 1.f, 0.f);
  for (int64_t b = 0; b < K / 128; ++b) {
    const float *xb = x + b * 128;
    for (int r = 0; r < NR; ++r) {
      const uint8_t *wb = W + r * ldw + b * 32;
      const __m512i v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(wb + 0)));
      const __m512i v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(wb + 16)));
      for (int t = 0; t < 4; ++t) {
        const __m512 lut = _mm512_mul_ps(base, _mm512_set1_ps(S[r * G + (b * 128 + t * 32) / g]));
        const float *xt = xb + t * 32;
        acc0[r] = _mm512_fmadd_ps(_mm512_loadu_ps(xt), _mm512_permutexvar_ps(_mm512_srli_epi32(v0, 2 * t), lut), acc0[r]);
        acc1[r] = _mm512_fmadd_ps(_mm512_loadu_ps(xt + 16), _mm512_permutexvar_ps(_mm512_srli_epi32(v1, 2 * t), lut),
                                  acc1[r]);
      }
    }
  }
  for (int r = 0; r < NR; ++r) y[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
}

void avx512_f32_decode(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                       int64_t G, int64_t n0, int64_t n1) {
  const int64_t g = K / G, ldw = K / 4;
  for (int64_t m = 0; m < M; ++m) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) f32_gemv512<4>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n);
    for (; n < n1; ++n) f32_gemv512<1>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n);
  }
}

template <int MR, int NR>
AVX512_FN void f32_tile_prefill(const float *x, int64_t K, const float *P, float *y, int64_t ldy) {
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    __m512 w[NR];
    for (int r = 0; r < NR; ++r) w[r] = _mm512_loadu_ps(P + r * K + k);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * K + k);
      for (int r = 0; r < NR; ++r) acc[i][r] = _mm512_fmadd_ps(xv, w[r], acc[i][r]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int r = 0; r < NR; ++r) y[i * ldy + r] = _mm512_reduce_add_ps(acc[i][r]);
}

template <int NR>
void f32_prefill_panel(const float *x, const float *P, float *y, int64_t K, int64_t N, int64_t m0, int64_t m1) {
  constexpr int MR = 6;
  int64_t m = m0;
  for (; m + MR <= m1; m += MR) f32_tile_prefill<MR, NR>(x + m * K, K, P, y + m * N, N);
  for (; m < m1; ++m) f32_tile_prefill<1, NR>(x + m * K, K, P, y + m * N, N);
}

void avx512_f32_prefill(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                        int64_t G, int64_t n0, int64_t n1) {
  const int64_t ldw = K / 4, g = K / G;
  constexpr int NR = 4;
  constexpr int64_t MB = 24;
  std::vector<float> P((size_t)(NR * K));
  for (int64_t m0 = 0; m0 < M; m0 += MB) {
    const int64_t m1 = std::min(M, m0 + MB);
    for (int64_t n = n0; n < n1; n += NR) {
      const int nr = (int)std::min<int64_t>(NR, n1 - n);
      f32_unpack_rows(W + n * ldw, ldw, S + n * G, G, g, K, nr, P.data());
      switch (nr) {
        case 4: f32_prefill_panel<4>(x, P.data(), y + n, K, N, m0, m1); break;
        case 3: f32_prefill_panel<3>(x, P.data(), y + n, K, N, m0, m1); break;
        case 2: f32_prefill_panel<2>(x, P.data(), y + n, K, N, m0, m1); break;
        default: f32_prefill_panel<1>(x, P.data(), y + n, K, N, m0, m1); break;
      }
    }
  }
}
#endif  // BITCPM_X86

int validate(int64_t M, int64_t K, int64_t N, int64_t G, int act_bits) {
  if (M < 0 || N < 0 || K <= 0) return set_error(2, "ternary_matmul: M, N must be >= 0 and K > 0");
  if (K % 4 != 0) return set_error(2, "ternary_matmul: K (in_features) must be a multiple of 4");
  if (G <= 0 || K % G != 0)
    return set_error(2, "ternary_matmul: number of scale groups must divide K (K % group_size != 0)");
  if (act_bits != 0 && act_bits != 8) return set_error(2, "ternary_matmul: act_bits must be 0 (weight-only) or 8");
  return 0;
}

int matmul_impl(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                int64_t G, int act_bits, int nthreads, int force_portable) {
  int rc = validate(M, K, N, G, act_bits);
  if (rc) return rc;
  if (M == 0 || N == 0) return 0;
  const int nt = resolve_threads(nthreads);
  const bool portable = force_portable || g_force_portable.load() || !cpu_has_avx2();
  const int64_t g = K / G;
  if (act_bits == 0) {
#if BITCPM_X86
    if (!portable && g_max_isa.load() != 1 && cpu_has_avx512() && M >= kF32PrefillMinM && K % 128 == 0 &&
        g % 32 == 0) {
      parallel_for(N, nt, 4, [&](int64_t n0, int64_t n1) { avx512_f32_prefill(x, W, S, y, M, K, N, G, n0, n1); });
      return 0;
    }
    if (!portable && g_max_isa.load() != 1 && cpu_has_avx512() && K % 128 == 0 && g % 32 == 0) {
      parallel_for(N, nt, 12, [&](int64_t n0, int64_t n1) { avx512_f32_decode(x, W, S, y, M, K, N, G, n0, n1); });
      return 0;
    }
    if (!portable && K % 32 == 0 && g % 8 == 0) {
      std::vector<Chunk8> ch = make_chunks8(K, g);
      const Chunk8 *cp = ch.data();
      int64_t nch = (int64_t)ch.size();
      parallel_for(N, nt, 12, [&](int64_t n0, int64_t n1) { avx2_f32(x, W, S, y, M, K, N, G, cp, nch, n0, n1); });
      return 0;
    }
#endif
    parallel_for(N, nt, 8, [&](int64_t n0, int64_t n1) { portable_f32(x, W, S, y, M, K, N, G, n0, n1); });
    return 0;
  }
  std::vector<int8_t> xq(M * K);
  std::vector<float> xs(M);
  quantize_rows(x, M, K, xq.data(), xs.data());
#if BITCPM_X86
  const bool vnni = !portable && g_max_isa.load() != 1 && cpu_has_vnni();
  if (vnni && (M >= kVnniPrefillMinM || !(K % 128 == 0 && g % 32 == 0)) && g % 4 == 0) {
    std::vector<int32_t> xsum(M * G);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t gi = 0; gi < G; ++gi) {
        int32_t s = 0;
        for (int64_t k = gi * g; k < (gi + 1) * g; ++k) s += xq[m * K + k];
        xsum[m * G + gi] = s;
      }
    parallel_for(N, nt, kPanel, [&](int64_t n0, int64_t n1) {
      vnni_a8_prefill(xq.data(), xsum.data(), xs.data(), W, S, y, M, K, N, G, n0, n1);
    });
    return 0;
  }
  if (vnni && K % 128 == 0 && g % 32 == 0) {
    const VnniDecodePlan pl = vnni_decode_plan(K, g);
    std::vector<int8_t> xperm((size_t)(M * pl.npairs * 256));
    std::vector<int32_t> negc((size_t)(M * pl.nwin * 16));
    for (int64_t m = 0; m < M; ++m)
      vnni_decode_prep(xq.data() + m * K, K, pl, xperm.data() + m * pl.npairs * 256, negc.data() + m * pl.nwin * 16);
    parallel_for(N, nt, 8, [&](int64_t n0, int64_t n1) {
      vnni_a8_decode(xperm.data(), negc.data(), xs.data(), W, S, y, M, K, N, G, pl, n0, n1);
    });
    return 0;
  }
  if (!portable && K % 128 == 0 && g % 32 == 0) {
    std::vector<int32_t> xsum(M * G);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t gi = 0; gi < G; ++gi) {
        int32_t s = 0;
        for (int64_t k = gi * g; k < (gi + 1) * g; ++k) s += xq[m * K + k];
        xsum[m * G + gi] = s;
      }
    parallel_for(N, nt, 8, [&](int64_t n0, int64_t n1) {
      avx2_a8(xq.data(), xsum.data(), xs.data(), W, S, y, M, K, N, G, n0, n1);
    });
    return 0;
  }
#endif
  parallel_for(N, nt, 8,
               [&](int64_t n0, int64_t n1) { portable_a8(xq.data(), xs.data(), W, S, y, M, K, N, G, n0, n1); });
  return 0;
}

// dx[M,K] = dy[M,N] @ Wq[N,K] (Wq = codes * scales). Threads over K ranges aligned to groups of 128.
int dx_impl(const float *dy, const uint8_t *W, const float *S, float *dx, int64_t M, int64_t K, int64_t N,
            int64_t G, int nthreads) {
  int rc = validate(M, K, N, G, 0);
  if (rc) return rc;
  std::fill(dx, dx + M * K, 0.0f);
  if (M == 0 || N == 0) return 0;
  const int64_t g = K / G;
  parallel_for(K, resolve_threads(nthreads), 128, [&](int64_t k0, int64_t k1) {
    std::vector<float> w(k1 - k0);
    for (int64_t n = 0; n < N; ++n) {
      const uint8_t *prow = W + n * (K / 4);
      for (int64_t k = k0; k < k1; ++k) {
        int64_t byte;
        int shift;
        locate(K, k, byte, shift);
        w[k - k0] = (float)(((prow[byte] >> shift) & 3) - 1) * S[n * G + k / g];
      }
      for (int64_t m = 0; m < M; ++m) {
        const float d = dy[m * N + n];
        float *o = dx + m * K + k0;
        for (int64_t k = 0; k < k1 - k0; ++k) o[k] += d * w[k];
      }
    }
  });
  return 0;
}

// ---- ternary fake quantization of one weight row (training forward), groups of g inputs
void fake_quant_row_portable(const float *w, float *out, int64_t K, int64_t g, float eps) {
  for (int64_t k0 = 0; k0 < K; k0 += g) {
    double acc = 0.0;
    for (int64_t k = 0; k < g; ++k) acc += std::fabs(w[k0 + k]);
    const float sc = std::max((float)(acc / (double)g), eps);
    for (int64_t k = 0; k < g; ++k) {
      const float lv = std::nearbyint(w[k0 + k] / sc);   // default rounding: half to even
      out[k0 + k] = std::min(1.0f, std::max(-1.0f, lv)) * sc;
    }
  }
}

// g % 8 == 0. Group |w| sums in 8 float lanes, combined in double; w / s rounded half to even.
__attribute__((target("avx2,fma"))) void fake_quant_row_avx2(const float *w, float *out, int64_t K, int64_t g,
                                                             float eps) {
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

bool is_dtype(const char *d, const char *want) { return d != nullptr && std::strcmp(d, want) == 0; }

int check_aot(int nparam, int expected, int *ndims, int64_t **shapes, const char **dtypes, const char *name,
              const char *const *want_dtypes) {
  if (nparam != expected)
    return set_error(3, std::string(name) + ": expected " + std::to_string(expected) + " params, got " +
                            std::to_string(nparam));
  for (int i = 0; i < expected; ++i) {
    if (ndims[i] != 2)
      return set_error(3, std::string(name) + ": param " + std::to_string(i) + " must be 2-D, got ndim " +
                              std::to_string(ndims[i]));
    if (!is_dtype(dtypes[i], want_dtypes[i]))
      return set_error(3, std::string(name) + ": param " + std::to_string(i) + " must be " + want_dtypes[i] +
                              ", got " + (dtypes[i] ? dtypes[i] : "null"));
  }
  (void)shapes;
  return 0;
}

int aot_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, int act_bits,
                const char *name) {
  static const char *const want[4] = {"float32", "uint8", "float32", "float32"};
  int rc = check_aot(nparam, 4, ndims, shapes, dtypes, name, want);
  if (rc) return rc;
  const int64_t M = shapes[0][0], K = shapes[0][1], N = shapes[1][0], G = shapes[2][1];
  if (K % 4 != 0 || shapes[1][1] * 4 != K || shapes[2][0] != N || shapes[3][0] != M || shapes[3][1] != N)
    return set_error(3, std::string(name) + ": inconsistent shapes (x [M,K], packed [N,K/4], scales [N,G], y [M,N])");
  return matmul_impl((const float *)params[0], (const uint8_t *)params[1], (const float *)params[2],
                     (float *)params[3], M, K, N, G, act_bits, 0, 0);
}

}  // namespace

extern "C" {

int bitcpm_set_num_threads(int n) {
  g_num_threads.store(n > 0 ? n : 0);
  return resolve_threads(0);
}
int bitcpm_get_num_threads() { return resolve_threads(0); }
int bitcpm_set_force_portable(int f) {
  g_force_portable.store(f ? 1 : 0);
  return 0;
}
int bitcpm_get_force_portable() { return g_force_portable.load(); }
int bitcpm_has_avx2() { return cpu_has_avx2() ? 1 : 0; }
int bitcpm_has_avx512_vnni() { return cpu_has_vnni() ? 1 : 0; }
// Highest instruction set the kernels may use (tests / benchmarks): 0 = best available,
// 1 = at most AVX2+FMA (disables the AVX-512 VNNI path). force_portable still wins.
int bitcpm_set_max_isa(int level) {
  g_max_isa.store(level == 1 ? 1 : 0);
  return 0;
}
int bitcpm_get_max_isa() { return g_max_isa.load(); }
const char *bitcpm_last_error() {
  static thread_local std::string copy;
  std::lock_guard<std::mutex> lk(g_err_mu);
  copy = g_err;
  return copy.c_str();
}

// nthreads <= 0: use the global setting; force_portable != 0: portable path for this call.
int bitcpm_ternary_matmul(const float *x, const uint8_t *packed, const float *scales, float *y, int64_t M,
                          int64_t K, int64_t N, int64_t G, int act_bits, int nthreads, int force_portable) {
  return matmul_impl(x, packed, scales, y, M, K, N, G, act_bits, nthreads, force_portable);
}

int bitcpm_ternary_matmul_dx(const float *dy, const uint8_t *packed, const float *scales, float *dx, int64_t M,
                             int64_t K, int64_t N, int64_t G, int nthreads) {
  return dx_impl(dy, packed, scales, dx, M, K, N, G, nthreads);
}

// AOT: inputs x float32 [M,K], packed uint8 [N,K/4], scales float32 [N,G]; output y float32 [M,N].
int TernaryMatmulW(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                   void *extra) {
  (void)stream;
  (void)extra;
  return aot_forward(nparam, params, ndims, shapes, dtypes, 0, "TernaryMatmulW");
}

int TernaryMatmulA8(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  (void)stream;
  (void)extra;
  return aot_forward(nparam, params, ndims, shapes, dtypes, 8, "TernaryMatmulA8");
}

// AOT backward: inputs dy float32 [M,N], packed uint8 [N,K/4], scales float32 [N,G]; output dx float32 [M,K].
int TernaryMatmulDx(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                    void *extra) {
  (void)stream;
  (void)extra;
  static const char *const want[4] = {"float32", "uint8", "float32", "float32"};
  int rc = check_aot(nparam, 4, ndims, shapes, dtypes, "TernaryMatmulDx", want);
  if (rc) return rc;
  const int64_t M = shapes[0][0], N = shapes[0][1], K = shapes[3][1], G = shapes[2][1];
  if (shapes[1][0] != N || shapes[1][1] * 4 != K || shapes[2][0] != N || shapes[3][0] != M)
    return set_error(3, "TernaryMatmulDx: inconsistent shapes (dy [M,N], packed [N,K/4], scales [N,G], dx [M,K])");
  return dx_impl((const float *)params[0], (const uint8_t *)params[1], (const float *)params[2], (float *)params[3],
                 M, K, N, G, 0);
}

// AOT training forward of the ternary weight quantizer (fake quantization), one pass per group:
// inputs w float32 [N,K], spec float32 [1,2] = (group size g, eps); output wq float32 [N,K] with
// wq = clamp(nearbyint(w / s), -1, 1) * s, s = max(mean|w_group|, eps). Same formula and rounding
// (half to even) as bitcpm_ms.quant.primitives; the group mean is accumulated in double. The
// backward (identity, STE) belongs to the calling Cell's bprop.
int TernaryFakeQuant(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
                     void *extra) {
  (void)stream;
  (void)extra;
  static const char *const want[3] = {"float32", "float32", "float32"};
  int rc = check_aot(nparam, 3, ndims, shapes, dtypes, "TernaryFakeQuant", want);
  if (rc) return rc;
  const int64_t N = shapes[0][0], K = shapes[0][1];
  const float *spec = (const float *)params[1];
  const int64_t g = (int64_t)spec[0];
  const float eps = spec[1];
  if (shapes[1][0] != 1 || shapes[1][1] != 2 || shapes[2][0] != N || shapes[2][1] != K)
    return set_error(3, "TernaryFakeQuant: inconsistent shapes (w [N,K], spec [1,2], wq [N,K])");
  if (g <= 0 || K % g != 0 || !(eps > 0.0f))
    return set_error(3, "TernaryFakeQuant: group size " + std::to_string(g) + " must divide K=" + std::to_string(K) +
                            " and eps must be positive");
  const float *w = (const float *)params[0];
  float *out = (float *)params[2];
  const bool avx2 = g % 8 == 0 && !g_force_portable.load() && cpu_has_avx2();
  parallel_for(N, resolve_threads(0), 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      if (avx2)
        fake_quant_row_avx2(w + n * K, out + n * K, K, g, eps);
      else
        fake_quant_row_portable(w + n * K, out + n * K, K, g, eps);
    }
  });
  return 0;
}

// Quantize a latent float32 weight [N,K] to ternary (s = max(mean|W_group|, eps), code = clamp(round(W/s)))
// and pack it, in one pass per group: the first half of a fused training forward (used by the
// benchmark to measure whether fusing beats fake-quant + MatMul). The group mean is accumulated in
// double, so a scale can differ from numpy's float32 pairwise mean in the last bit.
int bitcpm_quantize_pack(const float *w, int64_t N, int64_t K, int64_t G, float eps, uint8_t *packed, float *scales,
                         int nthreads) {
  int rc = validate(1, K, N, G, 0);
  if (rc) return rc;
  const int64_t g = K / G;
  parallel_for(N, resolve_threads(nthreads), 8, [&](int64_t n0, int64_t n1) {
    std::vector<float> sx(K);  // scale of each element of the row
    for (int64_t n = n0; n < n1; ++n) {
      const float *wr = w + n * K;
      for (int64_t gi = 0; gi < G; ++gi) {
        double acc = 0.0;
        for (int64_t k = gi * g; k < (gi + 1) * g; ++k) acc += std::fabs(wr[k]);
        float sc = std::max((float)(acc / (double)g), eps);
        scales[n * G + gi] = sc;
        std::fill(sx.begin() + gi * g, sx.begin() + (gi + 1) * g, sc);
      }
      uint8_t *pr = packed + n * (K / 4);
      for (int64_t base = 0; base < K; base += 128) {
        const int64_t q = std::min<int64_t>(128, K - base) / 4;
        for (int64_t j = 0; j < q; ++j) {
          unsigned b = 0;
          for (int t = 0; t < 4; ++t) {
            const int64_t k = base + t * q + j;
            float c = std::min(1.0f, std::max(-1.0f, std::nearbyint(wr[k] / sx[k])));
            b |= (unsigned)((int)c + 1) << (2 * t);
          }
          pr[base / 4 + j] = (uint8_t)b;
        }
      }
    }
  });
  return 0;
}

}  // extern "C"
