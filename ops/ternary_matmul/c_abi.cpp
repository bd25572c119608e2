// Exported C functions of libbitcpm_ternary.so: the only symbols with default visibility (the
// library is built with -fvisibility=hidden).
//   ctypes (bitcpm_ms/kernels/library.py): settings, bitcpm_ternary_matmul, bitcpm_ternary_matmul_dx,
//     bitcpm_quantize_pack, bitcpm_last_error.
//   MindSpore AOT (ops.Custom func_type="aot"): TernaryMatmulW, TernaryMatmulA8, TernaryMatmulDx,
//     TernaryFakeQuant. Signature: int F(int nparam, void **params, int *ndims, int64_t **shapes,
//     const char **dtypes, void *stream, void *extra); params are the inputs then the output.
//     Scalar settings of an op (TernaryFakeQuant's group size and eps, TernaryMatmulA8's eps) come
//     as a small float32 "spec" input, so one compiled function serves every setting and a
//     MindIR export keeps them as constants.
// Every function returns 0 on success and a nonzero code on error, with a message for
// bitcpm_last_error() (MindSpore turns a nonzero AOT return into a RuntimeError). The error state
// and the count / dtype helpers are ops/common/c_abi_util.cpp's.

#include <memory>
#include <string>
#include <vector>

#include "ternary_common.h"

namespace bitcpm {

const char *const kErrorEchoPrefix = nullptr;  // messages go to bitcpm_last_error() only

namespace {

int check_aot(int nparam, int expected, int *ndims, const char **dtypes, const char *name,
              const char *const *want_dtypes) {
  if (int rc = check_count(name, nparam, expected, "params")) return rc;
  for (int i = 0; i < expected; ++i) {
    if (ndims[i] != 2)
      return set_error(3, std::string(name) + ": param " + std::to_string(i) + " must be 2-D, got ndim " +
                              std::to_string(ndims[i]));
    if (!dtype_is(dtypes[i], want_dtypes[i]))
      return set_error(3, std::string(name) + ": param " + std::to_string(i) + " must be " + want_dtypes[i] +
                              ", got " + dtype_name(dtypes[i]));
  }
  return 0;
}

// Inputs x [M,K], packed [N,K/4], scales [N,G] (A8: then spec [1,1] = eps); output y [M,N].
int aot_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, int act_bits,
                const char *name) {
  static const char *const want[5] = {"float32", "uint8", "float32", "float32", "float32"};
  const int nin = act_bits == 8 ? 4 : 3;
  int rc = check_aot(nparam, nin + 1, ndims, dtypes, name, want);
  if (rc) return rc;
  const int64_t M = shapes[0][0], K = shapes[0][1], N = shapes[1][0], G = shapes[2][1];
  const int64_t *yshape = shapes[nin];
  if (K % 4 != 0 || shapes[1][1] * 4 != K || shapes[2][0] != N || yshape[0] != M || yshape[1] != N)
    return set_error(3, std::string(name) + ": inconsistent shapes (x [M,K], packed [N,K/4], scales [N,G], y [M,N])");
  float eps = 0.0f;  // unused by weight-only
  if (act_bits == 8) {
    if (shapes[3][0] != 1 || shapes[3][1] != 1) return set_error(3, std::string(name) + ": spec must be [1,1] (eps)");
    eps = ((const float *)params[3])[0];
  }
  return matmul_impl((const float *)params[0], (const uint8_t *)params[1], (const float *)params[2],
                     (float *)params[nin], M, K, N, G, act_bits, eps, 0, 0);
}

}  // namespace
}  // namespace bitcpm

using namespace bitcpm;

// ---------------------------------------------------------------- settings
BITCPM_API int bitcpm_set_num_threads(int n) {
  g_num_threads.store(n > 0 ? n : 0);
  return resolve_threads(0);
}
BITCPM_API int bitcpm_get_num_threads() { return resolve_threads(0); }
// Longest poll (microseconds) of an idle worker or a waiting caller inside the decode ops' spin
// sessions before it sleeps; 0: never poll (threads.cpp). Returns the setting.
BITCPM_API int bitcpm_set_spin_us(int us) {
  g_spin_us.store(us > 0 ? us : 0);
  return g_spin_us.load();
}
BITCPM_API int bitcpm_get_spin_us() { return g_spin_us.load(); }
// Opens (open != 0) or closes a spin session (threads.cpp) from outside the decode ops: for callers that
// run many kernel calls back to back, such as benchmarks/llamacpp_kernel.cpp. Sessions nest.
BITCPM_API int bitcpm_spin_session(int open) {
  static thread_local std::vector<std::unique_ptr<SpinSession>> held;
  if (open) {
    held.push_back(std::make_unique<SpinSession>());
  } else if (!held.empty()) {
    held.pop_back();
  }
  return (int)held.size();
}
BITCPM_API int bitcpm_set_force_portable(int f) {
  g_force_portable.store(f ? 1 : 0);
  return 0;
}
BITCPM_API int bitcpm_get_force_portable() { return g_force_portable.load(); }
BITCPM_API int bitcpm_has_avx2() { return cpu::has(kNeedAvx2) ? 1 : 0; }
BITCPM_API int bitcpm_has_avx512_vnni() { return cpu::has(kNeedVnni) ? 1 : 0; }
// Highest instruction set the kernels may use (tests / benchmarks): 0 = best available,
// 1 = at most AVX2+FMA (disables every AVX-512 path). force_portable still wins.
BITCPM_API int bitcpm_set_max_isa(int level) {
  g_max_isa.store(level == kIsaAvx2 ? kIsaAvx2 : kIsaBest);
  return 0;
}
BITCPM_API int bitcpm_get_max_isa() { return g_max_isa.load(); }
BITCPM_API const char *bitcpm_last_error() { return last_error(); }

// ---------------------------------------------------------------- ctypes
// act_bits 0 (weight-only) or 8 (A8, activation quantizer floor eps); nthreads <= 0: use the global
// setting; force_portable != 0: portable path for this call.
BITCPM_API int bitcpm_ternary_matmul(const float *x, const uint8_t *packed, const float *scales, float *y, int64_t M,
                                     int64_t K, int64_t N, int64_t G, int act_bits, float eps, int nthreads,
                                     int force_portable) {
  return matmul_impl(x, packed, scales, y, M, K, N, G, act_bits, eps, nthreads, force_portable);
}

BITCPM_API int bitcpm_ternary_matmul_dx(const float *dy, const uint8_t *packed, const float *scales, float *dx,
                                        int64_t M, int64_t K, int64_t N, int64_t G, int nthreads) {
  return dx_impl(dy, packed, scales, dx, M, K, N, G, nthreads);
}

// Quantize a latent float32 weight [N,K] to ternary (s = max(mean|W_group|, eps), code = clamp(round(W/s)))
// and pack it, in one pass per group: the first half of a fused training forward (used by the
// benchmark to measure whether fusing beats fake-quant + MatMul). The group mean is accumulated in
// double, so a scale can differ from numpy's float32 pairwise mean in the last bit.
// ctypes: the A8 kernels' per-token activation quantizer, x [M,K] -> xq int8 [M,K], s [M] (portable:
// the portable loop, else the one the A8 paths use on this CPU). For the tests of its SIMD form.
BITCPM_API int bitcpm_quantize_activations(const float *x, int64_t M, int64_t K, float eps, int8_t *xq, float *s,
                                           int portable) {
  if (M < 0 || K <= 0) return set_error(3, "quantize_activations: need M >= 0, K > 0");
  quantize_activations(x, M, K, eps, xq, s, portable != 0);
  return 0;
}

BITCPM_API int bitcpm_quantize_pack(const float *w, int64_t N, int64_t K, int64_t G, float eps, uint8_t *packed,
                                    float *scales, int nthreads) {
  return quantize_pack_impl(w, N, K, G, eps, packed, scales, nthreads);
}

// ---------------------------------------------------------------- MindSpore AOT
// Inputs x float32 [M,K], packed uint8 [N,K/4], scales float32 [N,G]; output y float32 [M,N].
BITCPM_API int TernaryMatmulW(BITCPM_AOT_ARGS) {
  return aot_forward(nparam, params, ndims, shapes, dtypes, 0, "TernaryMatmulW");
}

// Inputs x float32 [M,K], packed uint8 [N,K/4], scales float32 [N,G], spec float32 [1,1] = (eps);
// output y float32 [M,N].
BITCPM_API int TernaryMatmulA8(BITCPM_AOT_ARGS) {
  return aot_forward(nparam, params, ndims, shapes, dtypes, 8, "TernaryMatmulA8");
}

// Backward: inputs dy float32 [M,N], packed uint8 [N,K/4], scales float32 [N,G]; output dx float32 [M,K].
BITCPM_API int TernaryMatmulDx(BITCPM_AOT_ARGS) {
  static const char *const want[4] = {"float32", "uint8", "float32", "float32"};
  int rc = check_aot(nparam, 4, ndims, dtypes, "TernaryMatmulDx", want);
  if (rc) return rc;
  const int64_t M = shapes[0][0], N = shapes[0][1], K = shapes[3][1], G = shapes[2][1];
  if (shapes[1][0] != N || shapes[1][1] * 4 != K || shapes[2][0] != N || shapes[3][0] != M)
    return set_error(3, "TernaryMatmulDx: inconsistent shapes (dy [M,N], packed [N,K/4], scales [N,G], dx [M,K])");
  return dx_impl((const float *)params[0], (const uint8_t *)params[1], (const float *)params[2], (float *)params[3],
                 M, K, N, G, 0);
}

// Training forward of the ternary weight quantizer (fake quantization), one pass per group:
// inputs w float32 [N,K], spec float32 [1,2] = (group size g, eps); output wq float32 [N,K] with
// wq = clamp(nearbyint(w / s), -1, 1) * s, s = max(mean|w_group|, eps). Same formula and rounding
// (half to even) as bitcpm_ms.quant.primitives; the group mean is accumulated in double. The
// backward (identity, STE) belongs to the calling Cell's bprop.
BITCPM_API int TernaryFakeQuant(BITCPM_AOT_ARGS) {
  static const char *const want[3] = {"float32", "float32", "float32"};
  int rc = check_aot(nparam, 3, ndims, dtypes, "TernaryFakeQuant", want);
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
  fake_quant_impl((const float *)params[0], (float *)params[2], N, K, g, eps);
  return 0;
}
