// Portable C++ path (any CPU), plus the scalar pieces every path shares: A8 activation
// quantization and group sums, the backward dx, weight fake quantization and quantize+pack.
// The portable kernels define the reference operation order: the VNNI A8 prefill kernel is
// bit-identical to portable_a8 (see avx512.cpp).

#include <algorithm>
#include <cmath>
#include <vector>

#include "ternary_common.h"

namespace bitcpm {
namespace {

// Position of element k of a row in the packed layout.
inline void locate(int64_t K, int64_t k, int64_t &byte, int &shift) {
  int64_t base = (k / kBlock) * kBlock;
  int64_t B = std::min<int64_t>(kBlock, K - base);
  int64_t q = B / 4;
  int64_t off = k - base;
  byte = base / 4 + off % q;
  shift = (int)(2 * (off / q));
}

// Decode one packed row into int8 codes in {-1, 0, 1}.
void decode_row(const uint8_t *prow, int64_t K, int8_t *codes) {
  for (int64_t base = 0; base < K; base += kBlock) {
    int64_t B = std::min<int64_t>(kBlock, K - base);
    int64_t q = B / 4;
    const uint8_t *p = prow + base / 4;
    for (int t = 0; t < 4; ++t)
      for (int64_t j = 0; j < q; ++j) codes[base + t * q + j] = (int8_t)(((p[j] >> (2 * t)) & 3) - 1);
  }
}

}  // namespace

void quantize_rows(const float *x, int64_t M, int64_t K, float eps, int8_t *xq, float *s) {
  for (int64_t m = 0; m < M; ++m) {
    const float *xr = x + m * K;
    float amax = 0.0f;
    for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
    float sm = 127.0f / std::max(amax, eps);
    s[m] = sm;
    int8_t *qr = xq + m * K;
    for (int64_t k = 0; k < K; ++k) {
      float v = std::nearbyint(xr[k] * sm);
      v = std::min(127.0f, std::max(-128.0f, v));
      qr[k] = (int8_t)v;
    }
  }
}

void activation_group_sums(const int8_t *xq, int64_t M, int64_t K, int64_t G, int32_t *xsum) {
  const int64_t g = K / G;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t gi = 0; gi < G; ++gi) {
      int32_t s = 0;
      for (int64_t k = gi * g; k < (gi + 1) * g; ++k) s += xq[m * K + k];
      xsum[m * G + gi] = s;
    }
}

void portable_f32(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                  int64_t G, int64_t n0, int64_t n1) {
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

void portable_dx(const float *dy, const uint8_t *W, const float *S, float *dx, int64_t M, int64_t K, int64_t N,
                 int64_t G, int64_t k0, int64_t k1) {
  const int64_t g = K / G;
  std::vector<float> w(k1 - k0);  // dequantized weights of one row over [k0, k1)
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
}

void fake_quant_row_portable(const float *w, float *out, int64_t K, int64_t g, float eps) {
  for (int64_t k0 = 0; k0 < K; k0 += g) {
    double acc = 0.0;
    for (int64_t k = 0; k < g; ++k) acc += std::fabs(w[k0 + k]);
    const float sc = std::max((float)(acc / (double)g), eps);
    for (int64_t k = 0; k < g; ++k) {
      const float lv = std::nearbyint(w[k0 + k] / sc);  // default rounding: half to even
      out[k0 + k] = std::min(1.0f, std::max(-1.0f, lv)) * sc;
    }
  }
}

// s = max(mean|W_group|, eps), code = clamp(nearbyint(W / s), -1, 1); the group mean is
// accumulated in double.
void quantize_pack_rows(const float *w, int64_t K, int64_t G, float eps, uint8_t *packed, float *scales, int64_t n0,
                        int64_t n1) {
  const int64_t g = K / G;
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
    for (int64_t base = 0; base < K; base += kBlock) {
      const int64_t q = std::min<int64_t>(kBlock, K - base) / 4;
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
}

}  // namespace bitcpm
