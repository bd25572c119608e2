// Fused CPU training kernels (libbitcpm_fused_train.so): shared declarations.
//
// Every kernel has a numpy reference in bitcpm_ms/fused/reference.py and is tested against it on
// odd shapes (tests/fused). The kernels are written once (ft_kernels.h, ft_attention.h) with GCC
// vector extensions and compiled three times, inside `#pragma GCC target` regions, into the
// namespaces avx512 / avx2 / portable (isa_*.cpp); dispatch.cpp picks one table at run time from
// the CPU's features (capped by bitcpm_fused_set_max_isa for tests). The thread pool is the one of
// the ternary kernels (ops/ternary_matmul/threads.cpp, compiled into this library too).
//
// Determinism: every output element is computed by one thread in an order that does not depend on
// the thread count (reductions over rows go through fixed-size chunks summed in order), so results
// are bit-identical for any number of threads on a given ISA path. Paths differ in the last bits
// (vector width, hence reduction order, and FMA contraction).
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "ternary_common.h"  // parallel_for, resolve_threads, pool_run (threads.cpp)

namespace bitcpm {
namespace ft {

constexpr int kIsaBest = 0;      // the best the CPU has
constexpr int kIsaAvx2 = 1;      // at most AVX2 + FMA
constexpr int kIsaPortable = 2;  // no SIMD target (compiler's baseline vectorization only)

// Attention: masked keys are those whose additive mask value is <= kDeadMask. Keys past the last
// unmasked key of a row are skipped only when they provably contribute exactly 0 to the softmax
// (see ft_attention.h); otherwise the full row is computed.
constexpr float kDeadMask = -1000.0f;
constexpr float kUnderflowMargin = 120.0f;  // expf(x) == 0.0f in float32 for x < -104

struct AttnDims {
  int64_t B, S, H, Hkv, D, Bm;  // Bm: batch of the mask (1 or B)
  int64_t Bc;                   // batch of the cos / sin tables (1, or B: per-row positions, packed documents)
  float scale;
};

// One kernel table per instruction set.
struct KernelTable {
  const char *name;
  void (*ce_forward)(const float *logits, const int32_t *labels, int64_t N, int64_t V, float *loss, float *lse,
                     int nthreads);
  void (*ce_backward)(const float *logits, const int32_t *labels, const float *lse, const float *dloss,
                      const float *dlse, int64_t N, int64_t V, float *dlogits, int nthreads);
  void (*distill_forward)(const float *s, const float *t, const int32_t *labels, int64_t N, int64_t V, float c,
                          float *ce, float *kl, float *stats, int nthreads);
  void (*distill_backward)(const float *s, const float *t, const int32_t *labels, const float *stats,
                           const float *dce, const float *dkl, int64_t N, int64_t V, float c, float *ds,
                           int nthreads);
  void (*rmsnorm_forward)(const float *x, const float *w, int64_t N, int64_t D, float eps, float *y, float *rstd,
                          int nthreads);
  void (*rmsnorm_backward)(const float *x, const float *w, const float *rstd, const float *dy, int64_t N, int64_t D,
                           float *dx, float *dw, int nthreads);
  void (*swiglu_forward)(const float *g, const float *u, int64_t n, float *h, int nthreads);
  void (*swiglu_backward)(const float *g, const float *u, const float *dh, int64_t n, float *dg, float *du,
                          int nthreads);
  void (*attention_forward)(const float *q, const float *k, const float *v, const float *cos_t, const float *sin_t,
                            const float *mask, const AttnDims &dm, float *out, float *stats, int nthreads);
  void (*attention_backward)(const float *q, const float *k, const float *v, const float *cos_t, const float *sin_t,
                             const float *mask, const AttnDims &dm, const float *out, const float *stats,
                             const float *dout, float *dq, float *dk, float *dv, int nthreads);
  void (*adamw_update)(const float *p, const float *g, const float *m, const float *v, int64_t n, float lr, float wd,
                       float b1, float b2, float eps, float step, float gscale, float *p_out, float *m_out,
                       float *v_out, int nthreads);
  void (*sum_squares)(const float *x, int64_t n, float *out, int nthreads);
};

#define BITCPM_FT_DECLARE_TABLE(ns) \
  namespace ns {                     \
  extern const KernelTable kTable;   \
  }
BITCPM_FT_DECLARE_TABLE(avx512)
BITCPM_FT_DECLARE_TABLE(avx2)
BITCPM_FT_DECLARE_TABLE(portable)

// dispatch.cpp
const KernelTable &table();  // the table for the CPU and the max-ISA setting
extern std::atomic<int> g_max_isa;

// What each table asks of the CPU (cpu::has, ops/common/cpu_features.h): exactly the instruction
// sets of the `#pragma GCC target` of its isa_*.cpp. The vector-extension code of the AVX-512 table
// is compiled with DQ and VL enabled and the compiler uses them (GCC 12 emits vpmullq,
// vextractf32x8, EVEX xmm16-31 forms): unlike the ternary library's AVX-512 kernels, it needs them.
constexpr unsigned kNeedAvx2 = cpu::kAvx2 | cpu::kFma;  // isa_avx2.cpp
constexpr unsigned kNeedAvx512 =
    kNeedAvx2 | cpu::kAvx512F | cpu::kAvx512BW | cpu::kAvx512DQ | cpu::kAvx512VL;  // isa_avx512.cpp

// c_abi.cpp, blas_matmul.cpp: set_error(4, "<name>: <what>") for a shape that does not fit.
int shape_error(const char *name, const std::string &what);

// Rows per parallel work chunk of the row-wise kernels (independent of the thread count, so that
// the chunked reductions are deterministic).
constexpr int64_t kRowChunk = 32;

}  // namespace ft
}  // namespace bitcpm
