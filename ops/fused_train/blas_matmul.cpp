// Dense float32 matmuls of a Linear layer (forward, dx, dw) through OpenBLAS's sgemm.
//
// OpenBLAS is not linked: Python passes the path of the scipy-openblas32 wheel's library to
// bitcpm_fused_set_blas() (bitcpm_ms/fused/library.py), which dlopens it and runs it
// single-threaded; the work is split over this library's thread pool instead (contiguous blocks
// of output rows, one sgemm call each), so OpenBLAS threads never spin next to MindSpore's.
// Without a BLAS the entry points fail by name, and Python does not select them.
//   LinearFwd(x [M,K], w [N,K]) -> y [M,N] = x w^T
//   LinearDx(dy [M,N], w [N,K]) -> dx [M,K] = dy w
//   LinearDw(dy [M,N], x [M,K]) -> dw [N,K] = dy^T x

#include <dlfcn.h>

#include <mutex>

#include "ft_common.h"

namespace bitcpm {
namespace ft {
namespace {

// cblas_sgemm with CBLAS's enum values passed as int (CblasRowMajor 101, NoTrans 111, Trans 112).
typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *,
                         int);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

std::mutex g_blas_mu;
std::atomic<sgemm_fn> g_sgemm{nullptr};

int check2d(const char *name, int nparam, int *ndims, const char **dtypes) {
  if (int rc = check_count(name, nparam, 3, "tensors")) return rc;
  for (int i = 0; i < 3; ++i) {
    if (ndims[i] != 2) return shape_error(name, "tensor " + std::to_string(i) + " must be 2-D");
    if (!dtype_is(dtypes[i], "float32"))
      return set_error(3, std::string(name) + ": tensor " + std::to_string(i) + " must be float32");
  }
  if (g_sgemm.load() == nullptr)
    return set_error(5, std::string(name) + ": no BLAS loaded (pip install scipy-openblas32)");
  return 0;
}

bool fits_int(int64_t v) { return v >= 0 && v <= 0x7fffffff; }

// call(r0, r1) for contiguous blocks of output rows (multiples of 16), one per pool thread.
template <class F>
void split_rows(int64_t rows, F call) {
  parallel_for(rows, resolve_threads(0), 16, [&](int64_t r0, int64_t r1) { call(r0, r1); });
}

}  // namespace
}  // namespace ft
}  // namespace bitcpm

using namespace bitcpm;
using namespace bitcpm::ft;

// Load `path` (a shared library exporting scipy_cblas_sgemm or cblas_sgemm) once; 0 on success.
BITCPM_API int bitcpm_fused_set_blas(const char *path) {
  std::lock_guard<std::mutex> lk(g_blas_mu);
  if (g_sgemm.load() != nullptr) return 0;
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) return set_error(6, std::string("bitcpm_fused_set_blas: cannot load ") + path + ": " + dlerror());
  void *f = dlsym(h, "scipy_cblas_sgemm");
  const char *threads_fn = "scipy_openblas_set_num_threads";
  if (f == nullptr) {
    f = dlsym(h, "cblas_sgemm");
    threads_fn = "openblas_set_num_threads";
  }
  if (f == nullptr) return set_error(6, std::string("bitcpm_fused_set_blas: no cblas_sgemm in ") + path);
  if (void *t = dlsym(h, threads_fn)) ((void (*)(int))t)(1);  // single-threaded: our pool splits the work
  g_sgemm.store((sgemm_fn)f);
  return 0;
}

BITCPM_API int bitcpm_fused_has_blas() { return g_sgemm.load() != nullptr ? 1 : 0; }

BITCPM_API int LinearFwd(BITCPM_AOT_ARGS) {
  const char *name = "LinearFwd";
  if (int rc = check2d(name, nparam, ndims, dtypes)) return rc;
  const int64_t M = shapes[0][0], K = shapes[0][1], N = shapes[1][0];
  if (shapes[1][1] != K || shapes[2][0] != M || shapes[2][1] != N || !fits_int(M) || !fits_int(N) || !fits_int(K))
    return shape_error(name, "x [M,K], w [N,K], y [M,N]");
  const float *x = (const float *)params[0], *w = (const float *)params[1];
  float *y = (float *)params[2];
  sgemm_fn f = g_sgemm.load();
  split_rows(M, [&](int64_t r0, int64_t r1) {
    f(kRowMajor, kNoTrans, kTrans, (int)(r1 - r0), (int)N, (int)K, 1.0f, x + r0 * K, (int)K, w, (int)K, 0.0f,
      y + r0 * N, (int)N);
  });
  return 0;
}

BITCPM_API int LinearDx(BITCPM_AOT_ARGS) {
  const char *name = "LinearDx";
  if (int rc = check2d(name, nparam, ndims, dtypes)) return rc;
  const int64_t M = shapes[0][0], N = shapes[0][1], K = shapes[1][1];
  if (shapes[1][0] != N || shapes[2][0] != M || shapes[2][1] != K || !fits_int(M) || !fits_int(N) || !fits_int(K))
    return shape_error(name, "dy [M,N], w [N,K], dx [M,K]");
  const float *dy = (const float *)params[0], *w = (const float *)params[1];
  float *dx = (float *)params[2];
  sgemm_fn f = g_sgemm.load();
  split_rows(M, [&](int64_t r0, int64_t r1) {
    f(kRowMajor, kNoTrans, kNoTrans, (int)(r1 - r0), (int)K, (int)N, 1.0f, dy + r0 * N, (int)N, w, (int)K, 0.0f,
      dx + r0 * K, (int)K);
  });
  return 0;
}

BITCPM_API int LinearDw(BITCPM_AOT_ARGS) {
  const char *name = "LinearDw";
  if (int rc = check2d(name, nparam, ndims, dtypes)) return rc;
  const int64_t M = shapes[0][0], N = shapes[0][1], K = shapes[1][1];
  if (shapes[1][0] != M || shapes[2][0] != N || shapes[2][1] != K || !fits_int(M) || !fits_int(N) || !fits_int(K))
    return shape_error(name, "dy [M,N], x [M,K], dw [N,K]");
  const float *dy = (const float *)params[0], *x = (const float *)params[1];
  float *dw = (float *)params[2];
  sgemm_fn f = g_sgemm.load();
  split_rows(N, [&](int64_t r0, int64_t r1) {   // dw[r0:r1] = dy[:, r0:r1]^T x
    f(kRowMajor, kTrans, kNoTrans, (int)(r1 - r0), (int)K, (int)M, 1.0f, dy + r0, (int)N, x, (int)K, 0.0f,
      dw + r0 * K, (int)K);
  });
  return 0;
}
