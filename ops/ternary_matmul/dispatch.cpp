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

// Thread ranges (parallel_for's `align`) are multiples of each kernel's row tile.
void run_weight_only(Path path, const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K,
                     int64_t N, int64_t G, int nt) {
  switch (path) {
#if BITCPM_X86
    case Path::kAvx512F32Prefill:
      parallel_for(N, nt, 4, [&](int64_t n0, int64_t n1) { avx512_f32_prefill(x, W, S, y, M, K, N, G, n0, n1); });
      return;
    case Path::kAvx512F32Decode:
      parallel_for(N, nt, 12, [&](int64_t n0, int64_t n1) { avx512_f32_decode(x, W, S, y, M, K, N, G, n0, n1); });
      return;
    case Path::kAvx2F32: {
      const std::vector<Chunk8> ch = make_chunks8(K, K / G);
      const Chunk8 *cp = ch.data();
      const int64_t nch = (int64_t)ch.size();
      parallel_for(N, nt, 12, [&](int64_t n0, int64_t n1) { avx2_f32(x, W, S, y, M, K, N, G, cp, nch, n0, n1); });
      return;
    }
#endif
    default:
      parallel_for(N, nt, 8, [&](int64_t n0, int64_t n1) { portable_f32(x, W, S, y, M, K, N, G, n0, n1); });
      return;
  }
}

void run_a8(Path path, const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
            int64_t G, float eps, int nt) {
  std::vector<int8_t> xq(M * K);
  std::vector<float> xs(M);
  quantize_rows(x, M, K, eps, xq.data(), xs.data());
  std::vector<int32_t> xsum;  // per-group activation sums: removes the +1 offset of u = code + 1
  if (path == Path::kVnniA8Prefill || path == Path::kAvx2A8) {
    xsum.resize(M * G);
    activation_group_sums(xq.data(), M, K, G, xsum.data());
  }
  switch (path) {
#if BITCPM_X86
    case Path::kVnniA8Prefill:
      parallel_for(N, nt, kPanel, [&](int64_t n0, int64_t n1) {
        vnni_a8_prefill(xq.data(), xsum.data(), xs.data(), W, S, y, M, K, N, G, n0, n1);
      });
      return;
    case Path::kVnniA8Decode: {
      // The decode kernel removes the offset per scale window (negc), not per group.
      const VnniDecodePlan pl = vnni_decode_plan(K, K / G);
      std::vector<int8_t> xperm((size_t)(M * pl.npairs * 256));
      std::vector<int32_t> negc((size_t)(M * pl.nwin * 16));
      for (int64_t m = 0; m < M; ++m)
        vnni_decode_prep(xq.data() + m * K, pl, xperm.data() + m * pl.npairs * 256, negc.data() + m * pl.nwin * 16);
      parallel_for(N, nt, 8, [&](int64_t n0, int64_t n1) {
        vnni_a8_decode(xperm.data(), negc.data(), xs.data(), W, S, y, M, K, N, G, pl, n0, n1);
      });
      return;
    }
    case Path::kAvx2A8:
      parallel_for(N, nt, 8, [&](int64_t n0, int64_t n1) {
        avx2_a8(xq.data(), xsum.data(), xs.data(), W, S, y, M, K, N, G, n0, n1);
      });
      return;
#endif
    default:
      parallel_for(N, nt, 8,
                   [&](int64_t n0, int64_t n1) { portable_a8(xq.data(), xs.data(), W, S, y, M, K, N, G, n0, n1); });
      return;
  }
}

}  // namespace

int matmul_impl(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                int64_t G, int act_bits, float eps, int nthreads, int force_portable) {
  int rc = validate(M, K, N, G, act_bits);
  if (rc) return rc;
  if (act_bits == 8 && !(eps > 0.0f && std::isfinite(eps)))
    return set_error(2, "ternary_matmul: the activation quantizer's eps must be a positive finite number");
  if (M == 0 || N == 0) return 0;
  const int nt = resolve_threads(nthreads);
  const Path path = select_path(M, K, K / G, act_bits, force_portable != 0);
  if (act_bits == 0)
    run_weight_only(path, x, W, S, y, M, K, N, G, nt);
  else
    run_a8(path, x, W, S, y, M, K, N, G, eps, nt);
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
