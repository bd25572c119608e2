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

bool fits_int(int64_t a, int64_t b, int64_t c) {
  for (int64_t v : {a, b, c})
    if (v < 0 || v > 0x7fffffff) return false;
  return true;
}

// c [rows, n] = op_a(a) op_b(b) with a reduction of length k: contiguous blocks of c's rows
// (multiples of 16), one single-threaded sgemm call each on a pool thread. Row r of op_a(a) starts
// at a + r * a_step (a_step = lda when a is read as is, 1 when it is read transposed).
void sgemm_rows(int op_a, int op_b, int64_t rows, int64_t n, int64_t k, const float *a, int64_t lda, int64_t a_step,
                const float *b, int64_t ldb, float *c) {
  const sgemm_fn f = g_sgemm.load();
  parallel_for(rows, resolve_threads(0), 16, [&](int64_t r0, int64_t r1) {
    f(kRowMajor, op_a, op_b, (int)(r1 - r0), (int)n, (int)k, 1.0f, a + r0 * a_step, (int)lda, b, (int)ldb, 0.0f,
      c + r0 * n, (int)n);
  });
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

#define F32(i) ((float *)params[i])
#define CF32(i) ((const float *)params[i])

BITCPM_API int LinearFwd(BITCPM_AOT_ARGS) {
  const char *name = "LinearFwd";
  if (int rc = check2d(name, nparam, ndims, dtypes)) return rc;
  const int64_t M = shapes[0][0], K = shapes[0][1], N = shapes[1][0];
  if (shapes[1][1] != K || shapes[2][0] != M || shapes[2][1] != N || !fits_int(M, N, K))
    return shape_error(name, "x [M,K], w [N,K], y [M,N]");
  sgemm_rows(kNoTrans, kTrans, M, N, K, CF32(0), K, K, CF32(1), K, F32(2));  // y = x w^T
  return 0;
}

BITCPM_API int LinearDx(BITCPM_AOT_ARGS) {
  const char *name = "LinearDx";
  if (int rc = check2d(name, nparam, ndims, dtypes)) return rc;
  const int64_t M = shapes[0][0], N = shapes[0][1], K = shapes[1][1];
  if (shapes[1][0] != N || shapes[2][0] != M || shapes[2][1] != K || !fits_int(M, N, K))
    return shape_error(name, "dy [M,N], w [N,K], dx [M,K]");
  sgemm_rows(kNoTrans, kNoTrans, M, K, N, CF32(0), N, N, CF32(1), K, F32(2));  // dx = dy w
  return 0;
}

BITCPM_API int LinearDw(BITCPM_AOT_ARGS) {
  const char *name = "LinearDw";
  if (int rc = check2d(name, nparam, ndims, dtypes)) return rc;
  const int64_t M = shapes[0][0], N = shapes[0][1], K = shapes[1][1];
  if (shapes[1][0] != M || shapes[2][0] != N || shapes[2][1] != K || !fits_int(M, N, K))
    return shape_error(name, "dy [M,N], x [M,K], dw [N,K]");
  sgemm_rows(kTrans, kNoTrans, N, K, M, CF32(0), N, 1, CF32(1), K, F32(2));  // dw[r0:r1] = dy[:, r0:r1]^T x
  return 0;
}
