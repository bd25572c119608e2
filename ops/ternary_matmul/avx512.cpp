// AVX-512 paths (x86 CPUs with avx512f + avx512bw, kNeedAvx512; the A8 kernels also need avx512vnni,
// kNeedVnni). No DQ or VL instruction: the target attributes below do not enable them.
//   A8 (VNNI): decode (M < kVnniPrefillMinM) reads the packed rows directly; prefill unpacks a
//     panel of 32 rows once and is bit-identical to the portable path.
//   Weight-only: decode (M < kF32PrefillMinM) is a 16-wide GEMV; prefill expands 4 rows at a time
//     to float32 and runs an FMA register tile.

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#include "ternary_common.h"

#if BITCPM_X86
// GCC 12's avx512fintrin.h initialises some intrinsics' pass-through operand from itself
// (__Y = __Y), which -Wall reports at every use (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

namespace bitcpm {

// ---------------------------------------------------------------- VNNI A8
// Selected at run time when the CPU has kNeedVnni, this target (and neither force_portable
// nor bitcpm_set_max_isa(1)). vpdpbusd multiplies unsigned u = code+1 in {0,1,2} (u8 operand) by
// int8 activations (s8 operand) and adds groups of 4 products into int32 lanes; the +1 offset is
// removed with the activation sum, so every per-group integer sum is exact.
#define VNNI_FN __attribute__((target("avx512f,avx512bw,avx512vnni,avx2,fma")))

// Prefill (M >= kVnniPrefillMinM, and any shape with g % 4 == 0 that the decode kernel does not
// take): a panel of 32 output rows is unpacked once to
// u bytes in the layout P[k/4][row][4] (one dword = 4 consecutive inputs of one row), so that one
// 64-byte load holds 4 inputs of 16 rows and the activation dword is broadcast: lanes = rows, no
// horizontal sums. Micro-tile: MR tokens x 32 rows (2 x 16 lanes), int32 accumulators per group.
// Float math per output, in group order: acc = acc + (float)isum_g * scale_g (mul, then add), then
// acc / s_token -- the same operations as the portable path, so the results are bit-identical to it.
namespace {

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

}  // namespace

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
// Where both halves of every window lie in one group (g % 256 == 0: pl.uniform) the window's scale is
// one broadcast instead of two blended ones: in-process A/B, 1 thread, g = 256, 1.20-1.22x at K = N =
// 768, 2048 and 4096, the same bits. Where the halves' groups are adjacent (g = 128 and an even number
// of blocks: pl.adjacent) it is a masked load of the two scales and one permute: 1.06-1.11x at g = 128.
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
    pl.uniform = pl.uniform && pl.gl[w] == pl.gh[w];
    pl.adjacent = pl.adjacent && pl.gh[w] == pl.gl[w] + 1;
  }
  return pl;
}

// xperm: npairs*256 bytes; negc: nwin*16 int32.
void vnni_decode_prep(const int8_t *xq, const VnniDecodePlan &pl, int8_t *xperm, int32_t *negc) {
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

namespace {

template <int NR, int kScales>  // 0: blend two broadcasts, 1: one broadcast (uniform), 2: adjacent pair
VNNI_FN void vnni_tile_decode(const int8_t *xp, const int32_t *negc, float xs, const uint8_t *W, int64_t ldw,
                              const float *S, int64_t G, const VnniDecodePlan &pl, float *y) {
  __m512 f[NR];
  __m512i a[NR];
  const __m512i m3 = _mm512_set1_epi8(3);
  const __m512i pair_idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
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
    for (int r = 0; r < NR; ++r)  // eight NR-row passes ahead (the AVX2 decode GEMV's distance)
      _mm_prefetch((const char *)(W + (r + 8 * NR) * ldw + p * 64), _MM_HINT_T0);
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
          const __m512 sc =
              kScales == 1 ? _mm512_set1_ps(S[r * G + gl[w]])
              : kScales == 2 ? _mm512_permutexvar_ps(pair_idx, _mm512_maskz_loadu_ps((__mmask16)0x3, S + r * G + gl[w]))
                             : _mm512_mask_blend_ps((__mmask16)0xFF00, _mm512_set1_ps(S[r * G + gl[w]]),
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

}  // namespace

void vnni_a8_decode(const int8_t *xperm, const int32_t *negc, const float *xs, const uint8_t *W, const float *S,
                    float *y, int64_t M, int64_t K, int64_t N, int64_t G, const VnniDecodePlan &pl, int64_t n0,
                    int64_t n1) {
  const int64_t ldw = K / 4;
  constexpr int NR = 4;
  for (int64_t m = 0; m < M; ++m) {
    const int8_t *xp = xperm + m * pl.npairs * 256;
    const int32_t *nc = negc + m * pl.nwin * 16;
    int64_t n = n0;
    auto run = [&](auto scales) {
      constexpr int kS = decltype(scales)::value;
      for (; n + NR <= n1; n += NR)
        vnni_tile_decode<NR, kS>(xp, nc, xs[m], W + n * ldw, ldw, S + n * G, G, pl, y + m * N + n);
      for (; n < n1; ++n) vnni_tile_decode<1, kS>(xp, nc, xs[m], W + n * ldw, ldw, S + n * G, G, pl, y + m * N + n);
    };
    if (pl.uniform)
      run(std::integral_constant<int, 1>());
    else if (pl.adjacent)
      run(std::integral_constant<int, 2>());
    else
      run(std::integral_constant<int, 0>());
  }
}

// ---------------------------------------------------------------- weight-only
// M >= kF32PrefillMinM, K % 128 == 0, g % 32 == 0. For a block of up to 24 tokens and a panel of 4
// output rows, the packed rows are expanded once to float32 w = code * scale (exact: -s, 0 or s;
// 16-entry permute table indexed by 4 bits of the shifted byte, pattern {-s, 0, s, 0} x 4) in a
// small row-major buffer, then a 6-token x 4-row register tile accumulates x * w with FMA in 16
// lanes over k (lane l holds k = l mod 16) and reduces each output once at the end. The float
// order per output is fixed (independent of tiling and threads), but it differs from the
// group-sum order of the portable path: within the tests' float32 bound.
#define AVX512_FN __attribute__((target("avx512f,avx512bw,avx2,fma")))

namespace {

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

}  // namespace

void avx512_f32_decode(const float *x, const uint8_t *W, const float *S, float *y, int64_t M, int64_t K, int64_t N,
                       int64_t G, int64_t n0, int64_t n1) {
  const int64_t g = K / G, ldw = K / 4;
  for (int64_t m = 0; m < M; ++m) {
    int64_t n = n0;
    for (; n + 4 <= n1; n += 4) f32_gemv512<4>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n);
    for (; n < n1; ++n) f32_gemv512<1>(x + m * K, K, W + n * ldw, ldw, S + n * G, G, g, y + m * N + n);
  }
}

namespace {

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

}  // namespace

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

}  // namespace bitcpm
#endif  // BITCPM_X86
