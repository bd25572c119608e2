// Run-time dispatch: the ISA settings, select_path() (the one place that decides which kernel runs,
// from the CPU's features: ops/common/cpu_features.h, kNeed* in ternary_common.h), and the drivers
// that prepare shared inputs and split the work over threads.

#include <algorithm>
#include <cmath>
#include <vector>

#include "ternary_common.h"

namespace bitcpm {

std::atomic<int> g_force_portable{0};
std::atomic<int> g_max_isa{kIsaBest};

int validate(int64_t M, int64_t K, int64_t N, int64_t G, int act_bits) {
  if (M < 0 || N < 0 || K <= 0) return set_error(2, "ternary_matmul: M, N must be >= 0 and K > 0");
  if (K % 4 != 0) return set_error(2, "ternary_matmul: K (in_features) must be a multiple of 4");
  if (G <= 0 || K % G != 0)
    return set_error(2, "ternary_matmul: number of scale groups must divide K (K % group_size != 0)");
  if (act_bits != 0 && act_bits != 8) return set_error(2, "ternary_matmul: act_bits must be 0 (weight-only) or 8");
  return 0;
}

void quantize_activations(const float *x, int64_t M, int64_t K, float eps, int8_t *xq, float *s, bool force_portable) {
#if BITCPM_X86
  if (!force_portable && !g_force_portable.load() && cpu::has(kNeedAvx2))
    return quantize_rows_avx2(x, M, K, eps, xq, s);
#endif
  quantize_rows(x, M, K, eps, xq, s);
}

Path select_path(int64_t M, int64_t K, int64_t g, int act_bits, bool force_portable) {
  const bool simd = !force_portable && !g_force_portable.load() && cpu::has(kNeedAvx2);
  const bool avx512_allowed = simd && g_max_isa.load() != kIsaAvx2;
  // Whole 128-input blocks and groups made of whole 32-input slots: what the AVX-512 kernels and
  // the AVX2 A8 kernel iterate over.
  const bool full_blocks = K % kBlock == 0 && g % kSlot == 0;
  if (act_bits == 0) {
    if (avx512_allowed && cpu::has(kNeedAvx512) && full_blocks)
      return M >= kF32PrefillMinM ? Path::kAvx512F32Prefill : Path::kAvx512F32Decode;
    if (simd && K % 32 == 0 && g % 8 == 0) return Path::kAvx2F32;  // 8-input chunks, 8-aligned groups
    return Path::kPortableF32;
  }
  const bool vnni = avx512_allowed && cpu::has(kNeedVnni);
  if (vnni && full_blocks) return M >= kVnniPrefillMinM ? Path::kVnniA8Prefill : Path::kVnniA8Decode;
  if (vnni && g % 4 == 0) return Path::kVnniA8Prefill;  // unpacks any block shape, 4 inputs per dword
  if (simd && full_blocks) return Path::kAvx2A8;
  return Path::kPortableA8;
}

namespace {

// The activations of one matmul call, prepared once for every projection that reads them (the
// decode layer's q/k/v and gate/up share one): A8 quantization, group sums, the VNNI decode
// permutation; the AVX2 weight-only chunk list.
struct Prepared {
  Path path;
  const float *x;
  int64_t M, K, G;
  std::vector<int8_t> xq;
  std::vector<float> xs;
  std::vector<int32_t> xsum;  // per-group activation sums: remove the +1 offset of u = code + 1
  std::vector<int16_t> xstart;  // the AVX2 A8 kernels' int16 group starts (avx2_a8_short_groups)
#if BITCPM_X86
  VnniDecodePlan pl;
  std::vector<int8_t> xperm;
  std::vector<int32_t> negc;
  std::vector<Chunk8> ch;
#endif
};

void prepare(Prepared &p, const float *x, int64_t M, int64_t K, int64_t G, int act_bits, float eps,
             bool force_portable) {
  p.path = select_path(M, K, K / G, act_bits, force_portable);
  p.x = x;
  p.M = M;
  p.K = K;
  p.G = G;
#if BITCPM_X86
  if (p.path == Path::kAvx2F32) p.ch = make_chunks8(K, K / G);
#endif
  if (act_bits == 0) return;
  p.xq.resize(M * K);
  p.xs.resize(M);
  quantize_activations(x, M, K, eps, p.xq.data(), p.xs.data(), force_portable);
  if (p.path == Path::kVnniA8Prefill || p.path == Path::kAvx2A8) {
    p.xsum.resize(M * G);
    activation_group_sums(p.xq.data(), M, K, G, p.xsum.data());
  }
#if BITCPM_X86
  if (p.path == Path::kAvx2A8 && avx2_a8_short_groups(K / G)) {
    p.xstart.resize((size_t)(M * G * 16));
    a8_group_starts(p.xsum.data(), M, G, p.xstart.data());
  }
  if (p.path == Path::kVnniA8Decode) {  // the decode kernel removes the offset per scale window (negc)
    p.pl = vnni_decode_plan(K, K / G);
    p.xperm.resize((size_t)(M * p.pl.npairs * 256));
    p.negc.resize((size_t)(M * p.pl.nwin * 16));
    for (int64_t m = 0; m < M; ++m)
      vnni_decode_prep(p.xq.data() + m * K, p.pl, p.xperm.data() + m * p.pl.npairs * 256,
                       p.negc.data() + m * p.pl.nwin * 16);
  }
#endif
}

// Thread ranges (parallel_for's `align`) are multiples of each kernel's row tile.
int64_t row_align(Path path) {
  switch (path) {
    case Path::kAvx512F32Prefill:
      return 4;
    case Path::kAvx512F32Decode:
    case Path::kAvx2F32:
      return 12;
#if BITCPM_X86
    case Path::kVnniA8Prefill:
      return kPanel;
#endif
    default:
      return 8;
  }
}

// Output rows [n0, n1) of y [M, N] = x W^T for one packed weight W [N, K/4], scales S [N, G].
void run_rows(const Prepared &p, const uint8_t *W, const float *S, float *y, int64_t N, int64_t n0, int64_t n1) {
  const int64_t M = p.M, K = p.K, G = p.G;
  switch (p.path) {
#if BITCPM_X86
    case Path::kAvx512F32Prefill:
      return avx512_f32_prefill(p.x, W, S, y, M, K, N, G, n0, n1);
    case Path::kAvx512F32Decode:
      return avx512_f32_decode(p.x, W, S, y, M, K, N, G, n0, n1);
    case Path::kAvx2F32:
      return avx2_f32(p.x, W, S, y, M, K, N, G, p.ch.data(), (int64_t)p.ch.size(), n0, n1);
    case Path::kVnniA8Prefill:
      return vnni_a8_prefill(p.xq.data(), p.xsum.data(), p.xs.data(), W, S, y, M, K, N, G, n0, n1);
    case Path::kVnniA8Decode:
      return vnni_a8_decode(p.xperm.data(), p.negc.data(), p.xs.data(), W, S, y, M, K, N, G, p.pl, n0, n1);
    case Path::kAvx2A8:
      return avx2_a8(p.xq.data(), p.xsum.data(), p.xstart.data(), p.xs.data(), W, S, y, M, K, N, G, n0, n1);
#endif
    case Path::kPortableA8:
      return portable_a8(p.xq.data(), p.xs.data(), W, S, y, M, K, N, G, n0, n1);
    default:
      return portable_f32(p.x, W, S, y, M, K, N, G, n0, n1);
  }
}

int check_eps(int act_bits, float eps) {
  if (act_bits == 8 && !(eps > 0.0f && std::isfinite(eps)))
    return set_error(2, "ternary_matmul: the activation quantizer's eps must be a positive finite number");
  return 0;
}

}  // namespace

int matmul_impl(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                int64_t G, int act_bits, float eps, int nthreads, int force_portable) {
  int rc = validate(M, K, N, G, act_bits);
  if (rc || (rc = check_eps(act_bits, eps))) return rc;
  if (M == 0 || N == 0) return 0;
  Prepared p;
  prepare(p, x, M, K, G, act_bits, eps, force_portable != 0);
  parallel_for(N, resolve_threads(nthreads), row_align(p.path),
               [&](int64_t n0, int64_t n1) { run_rows(p, W, S, y, N, n0, n1); });
  return 0;
}

int matmul_multi_impl(const float *x, int count, const uint8_t *const *W, const float *const *S, float *const *y,
                      const int64_t *N, int64_t M, int64_t K, int64_t G, int act_bits, float eps, int nthreads) {
  int64_t total = 0;
  for (int j = 0; j < count; ++j) {
    if (int rc = validate(M, K, N[j], G, act_bits)) return rc;
    total += N[j];
  }
  if (int rc = check_eps(act_bits, eps)) return rc;
  if (M == 0 || total == 0) return 0;
  Prepared p;
  prepare(p, x, M, K, G, act_bits, eps, false);
  parallel_for(total, resolve_threads(nthreads), row_align(p.path), [&](int64_t lo, int64_t hi) {
    int64_t off = 0;  // first row of projection j in the concatenated rows
    for (int j = 0; j < count; off += N[j], ++j) {
      const int64_t n0 = std::max<int64_t>(lo - off, 0), n1 = std::min<int64_t>(hi - off, N[j]);
      if (n0 < n1) run_rows(p, W[j], S[j], y[j], N[j], n0, n1);
    }
  });
  return 0;
}

// dx[M,K] = dy[M,N] @ Wq[N,K] (Wq = codes * scales). Threads over K ranges aligned to blocks of 128.
int dx_impl(const float *dy, const uint8_t *W, const float *S, float *dx, int64_t M, int64_t K, int64_t N, int64_t G,
            int nthreads) {
  int rc = validate(M, K, N, G, 0);
  if (rc) return rc;
  std::fill(dx, dx + M * K, 0.0f);
  if (M == 0 || N == 0) return 0;
  parallel_for(K, resolve_threads(nthreads), kBlock,
               [&](int64_t k0, int64_t k1) { portable_dx(dy, W, S, dx, M, K, N, G, k0, k1); });
  return 0;
}

void fake_quant_impl(const float *w, float *out, int64_t N, int64_t K, int64_t g, float eps) {
  void (*row)(const float *, float *, int64_t, int64_t, float) = fake_quant_row_portable;
#if BITCPM_X86
  if (g % 8 == 0 && !g_force_portable.load() && cpu::has(kNeedAvx2)) row = fake_quant_row_avx2;
#endif
  parallel_for(N, resolve_threads(0), 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) row(w + n * K, out + n * K, K, g, eps);
  });
}

int quantize_pack_impl(const float *w, int64_t N, int64_t K, int64_t G, float eps, uint8_t *packed, float *scales,
                       int nthreads) {
  int rc = validate(1, K, N, G, 0);
  if (rc) return rc;
  parallel_for(N, resolve_threads(nthreads), 8,
               [&](int64_t n0, int64_t n1) { quantize_pack_rows(w, K, G, eps, packed, scales, n0, n1); });
  return 0;
}

}  // namespace bitcpm
