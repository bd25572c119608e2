// AVX2 + FMA path, W1.58A8 kernels (kNeedAvx2): maddubs of u = code + 1 (unsigned) by int8 activations,
// int16 then int32 accumulation, exact integer group sums. Decode (M = 1): four-row GEMVs; prompts:
// 4-token tiles; for groups of whole 128-blocks both share unpack_block_a8 / dot_block_a8, and groups
// made of 32-input slots (g = 32, 64, 96, ...) take the slot kernels. Every form gives the same int32
// group sums and the same float steps, so the same y bit for bit (tested).

#include <algorithm>
#include <vector>

#include "avx2_common.h"

#if BITCPM_X86

namespace bitcpm {

namespace {

// A8 tile for groups made of 32-input slots but not of whole blocks (g = 32, 64, 96, ...; whole-block
// groups take tile_a8_blocks). Full 128-blocks only: chunk (block b, slot t) = 32 consecutive elements.
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

// A full packed block (128 inputs, 32 bytes w) unpacked into its four 32-input slots: u0 and u2 as
// u = code + 1, u1 and u3 as 4u (w & 0b1100 before and after one 4-bit shift: 2 shifts fewer than
// unpacking each slot to u).
struct BlockA8 {
  __m256i u0, u1x4, u2, u3x4;
};
AVX2_FN inline BlockA8 unpack_block_a8(__m256i w, __m256i mask3, __m256i mask12) {
  const __m256i w4 = _mm256_srli_epi16(w, 4);
  return {_mm256_and_si256(w, mask3), _mm256_and_si256(w, mask12), _mm256_and_si256(w4, mask3),
          _mm256_and_si256(w4, mask12)};
}

// The int16 lane sums of u x over an unpacked block and the activations x0..x3 of its four slots. The
// 4u slots' products are multiples of 4 and their sum is divided by 4 once, exactly. The integers are
// exact: a maddubs pair of u x is at most 512 in magnitude, of 4u x at most 2048, so a lane of the
// result is at most 2048.
AVX2_FN inline __m256i dot_block_a8(const BlockA8 &u, __m256i x0, __m256i x1, __m256i x2, __m256i x3) {
  const __m256i p0 = _mm256_maddubs_epi16(u.u0, x0), p1 = _mm256_maddubs_epi16(u.u1x4, x1);
  const __m256i p2 = _mm256_maddubs_epi16(u.u2, x2), p3 = _mm256_maddubs_epi16(u.u3x4, x3);
  return _mm256_add_epi16(_mm256_add_epi16(p0, p2), _mm256_srai_epi16(_mm256_add_epi16(p1, p3), 2));
}

// A8 tile for a prompt (M >= 2 tokens) and groups of whole 128-blocks: MR tokens times one weight row.
// Each block of the row is loaded and unpacked once (unpack_block_a8) for the MR tokens, whose
// activations are read from memory (the token panel stays in L1/L2), into one int16 accumulator per
// token: the 4 tokens' accumulators and the unpacked block fit the 16 registers. The +1 offset as in
// gemv_a8_rows: the group's int16 start (kShort, xstart) or lane 0 of an int32 accumulator over runs of 4
// blocks. The int32 group sums are the same exact integers as tile_a8's, so both tiles, and every MR,
// give the same y bit for bit. A call runs one 4-token panel over a range of rows, so the constants and
// the pointers are set up once per panel, not per row (that alone was 25% at K = 768). In-process A/B,
// 1 thread, 128 tokens x 768 x 768, g = 256: 1.27x tile_a8<2, 2> (which spills its 12 accumulators and
// counts slots to know when to widen); 2x2, 1x4, 3x2, 2x3, 6x1 and 8x1 tiles of this form were 1-16%
// slower than 4x1.
template <int MR, bool kShort>
AVX2_FN void tile_a8_blocks(const int8_t *xq, const int32_t *xsum, const int16_t *xstart, const float *xs,
                            int64_t K, const uint8_t *W, const float *S, int64_t G, int64_t g, float *y, int64_t ldy,
                            int64_t rows) {
  const __m256i mask3 = _mm256_set1_epi8(3), mask12 = _mm256_set1_epi8(12);
  const __m256i ones16 = _mm256_set1_epi16(1);
  const int64_t bpg = g / 128, run = kShort ? bpg : 4, ldw = K / 4;
  for (int64_t n = 0; n < rows; ++n, W += ldw, S += G, ++y) {
    __m256 facc[MR];
    for (int i = 0; i < MR; ++i) facc[i] = _mm256_setzero_ps();
    for (int64_t gi = 0; gi < G; ++gi) {
      __m256i acc32[MR], a[MR];
      if (!kShort)
        for (int i = 0; i < MR; ++i) acc32[i] = _mm256_setr_epi32(-xsum[i * G + gi], 0, 0, 0, 0, 0, 0, 0);
      for (int64_t b0 = gi * bpg, bend = b0 + bpg; b0 < bend; b0 += run) {
        for (int i = 0; i < MR; ++i)
          a[i] = kShort ? _mm256_loadu_si256((const __m256i *)(xstart + (i * G + gi) * 16)) : _mm256_setzero_si256();
        for (int64_t b = b0, b1 = std::min(bend, b0 + run); b < b1; ++b) {
          const BlockA8 u = unpack_block_a8(_mm256_loadu_si256((const __m256i *)(W + b * 32)), mask3, mask12);
          for (int i = 0; i < MR; ++i) {
            const __m256i *xb = (const __m256i *)(xq + i * K + b * 128);
            a[i] = _mm256_add_epi16(a[i], dot_block_a8(u, _mm256_loadu_si256(xb), _mm256_loadu_si256(xb + 1),
                                                       _mm256_loadu_si256(xb + 2), _mm256_loadu_si256(xb + 3)));
          }
        }
        for (int i = 0; i < MR; ++i)
          acc32[i] = kShort ? _mm256_madd_epi16(a[i], ones16)
                            : _mm256_add_epi32(acc32[i], _mm256_madd_epi16(a[i], ones16));
      }
      const __m256 sc = _mm256_set1_ps(S[gi]);
      for (int i = 0; i < MR; ++i) facc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc32[i]), sc, facc[i]);
    }
    for (int i = 0; i < MR; ++i) y[i * ldy] = hsum256(facc[i]) / xs[i];
  }
}

// Tokens [m0, m1) times rows [n0, n1) with tile_a8_blocks: 4 tokens at a time, then the last ones alone.
template <bool kShort>
void run_a8_block_tiles(const int8_t *xq, const int32_t *xsum, const int16_t *xstart, const float *xs,
                        const uint8_t *W, const float *S, float *y, int64_t K, int64_t N, int64_t G, int64_t m0,
                        int64_t m1, int64_t n0, int64_t n1) {
  const int64_t ldw = K / 4, g = K / G;
  int64_t m = m0;
  for (; m + 4 <= m1; m += 4)
    tile_a8_blocks<4, kShort>(xq + m * K, xsum + m * G, kShort ? xstart + m * G * 16 : nullptr, xs + m, K,
                              W + n0 * ldw, S + n0 * G, G, g, y + m * N + n0, N, n1 - n0);
  for (; m < m1; ++m)
    tile_a8_blocks<1, kShort>(xq + m * K, xsum + m * G, kShort ? xstart + m * G * 16 : nullptr, xs + m, K,
                              W + n0 * ldw, S + n0 * G, G, g, y + m * N + n0, N, n1 - n0);
}

// A8 GEMV (decode: one activation row) for groups that are not whole 128-blocks (g = 32, 64, 96, ...):
// one packed row at a time (one sequential stream), one 32-input slot c = (block c / 4, shift 2 (c % 4))
// at a time, int16 runs of at most 32 slots widened once. The +1 offset is removed by -sum(xq over the
// group) in lane 0 of the int32 group sum, as in tile_a8: the group sums are exact int32. Whole-block
// groups take gemv_a8_rows below.
AVX2_FN void gemv_a8_row_slots(const int8_t *xq, const int32_t *xsum, float xs, const uint8_t *W, const float *S,
                               int64_t G, int64_t g, float *y) {
  const __m256i mask3 = _mm256_set1_epi8(3), ones16 = _mm256_set1_epi16(1);
  __m256 facc = _mm256_setzero_ps();
  const int64_t cpg = g / 32;
  for (int64_t gi = 0; gi < G; ++gi) {
    __m256i acc32 = _mm256_setr_epi32(-xsum[gi], 0, 0, 0, 0, 0, 0, 0);
    for (int64_t c0 = gi * cpg, cend = c0 + cpg; c0 < cend; c0 += 32) {  // <= 32 slots per int16 run
      const int64_t c1 = std::min(cend, c0 + 32);
      __m256i a = _mm256_setzero_si256();
      for (int64_t c = c0; c < c1; ++c) {
        const __m256i w = _mm256_loadu_si256((const __m256i *)(W + (c >> 2) * 32));
        const __m256i u = _mm256_and_si256(_mm256_srl_epi16(w, _mm_cvtsi32_si128((int)(2 * (c & 3)))), mask3);
        a = _mm256_add_epi16(a, _mm256_maddubs_epi16(u, _mm256_loadu_si256((const __m256i *)(xq + c * 32))));
      }
      acc32 = _mm256_add_epi32(acc32, _mm256_madd_epi16(a, ones16));
    }
    facc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc32), _mm256_set1_ps(S[gi]), facc);
  }
  *y = hsum256(facc) / xs;
}

// A8 GEMV (decode: one activation row) for groups of whole 128-blocks (g % 128 == 0), R consecutive
// rows at once (R = 4, and R = 1 for the last rows): the rows are adjacent in memory, so this is one
// sequential stream, with a software prefetch eight passes ahead (in-process A/B on the ~100M decode op:
// +4.8% over two passes, 16 no better); the activation loads, the loop control
// and the offset correction are shared, and the R independent chains hide each other's latency (at
// K = 768 a lone row spends as long in its prologue and final sum as in its 6 blocks). Each block's 32
// bytes are loaded once and split into its four 32-input slots (unpack_block_a8), into one int16 accumulator
// per row: one per row keeps the loop free of register spills (two per row, 4 rows, spilled four of
// them every block: in-process A/B, this form is 5-16% faster). The +1 offset is removed by
// -sum(xq over the group):
//   kShort (avx2_a8_short_groups: one or two blocks per group): it is the start of the int16
//     accumulator (xstart, a8_group_starts: split over lanes 0 and 1, and after 2 blocks of at most
//     2048 a lane stays under 20,500); one madd then gives the group's int32 lanes, with no int32
//     accumulator per row (in-process A/B: 8-9% faster than adding the correction in int32);
//   otherwise: lane 0 of an int32 accumulator, to which runs of at most 4 blocks are added.
// Either way the int32 lanes are the same exact integers, so every R and both forms give the same y bit
// for bit.
template <int R, bool kShort>
AVX2_FN void gemv_a8_rows(const int8_t *xq, const int32_t *xsum, const int16_t *xstart, float xs, const uint8_t *W,
                          int64_t ldw, const float *S, int64_t G, int64_t g, float *y) {
  const __m256i mask3 = _mm256_set1_epi8(3), mask12 = _mm256_set1_epi8(12);
  const __m256i ones16 = _mm256_set1_epi16(1);
  const int64_t bpg = g / 128, run = kShort ? bpg : 4;
  __m256 facc[R];
  for (int r = 0; r < R; ++r) facc[r] = _mm256_setzero_ps();
  for (int64_t gi = 0; gi < G; ++gi) {
    __m256i acc32[R], start = _mm256_setzero_si256();
    if (kShort) {
      start = _mm256_loadu_si256((const __m256i *)(xstart + gi * 16));
    } else {
      for (int r = 0; r < R; ++r) acc32[r] = _mm256_setr_epi32(-xsum[gi], 0, 0, 0, 0, 0, 0, 0);
    }
    for (int64_t b0 = gi * bpg, bend = b0 + bpg; b0 < bend; b0 += run) {
      const int64_t b1 = std::min(bend, b0 + run);
      __m256i a[R];
      for (int r = 0; r < R; ++r) a[r] = start;
      for (int64_t b = b0; b < b1; ++b) {
        const int8_t *xb = xq + b * 128;
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)xb);
        const __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb + 32));
        const __m256i x2 = _mm256_loadu_si256((const __m256i *)(xb + 64));
        const __m256i x3 = _mm256_loadu_si256((const __m256i *)(xb + 96));
        for (int r = 0; r < R; ++r) {
          _mm_prefetch((const char *)(W + (r + 8 * R) * ldw + b * 32), _MM_HINT_T0);  // eight passes ahead
          const __m256i w = _mm256_loadu_si256((const __m256i *)(W + r * ldw + b * 32));
          a[r] = _mm256_add_epi16(a[r], dot_block_a8(unpack_block_a8(w, mask3, mask12), x0, x1, x2, x3));
        }
      }
      if (kShort) {
        for (int r = 0; r < R; ++r) acc32[r] = _mm256_madd_epi16(a[r], ones16);
      } else {
        for (int r = 0; r < R; ++r) acc32[r] = _mm256_add_epi32(acc32[r], _mm256_madd_epi16(a[r], ones16));
      }
    }
    for (int r = 0; r < R; ++r)
      facc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc32[r]), _mm256_set1_ps(S[r * G + gi]), facc[r]);
  }
  for (int r = 0; r < R; ++r) y[r] = hsum256(facc[r]) / xs;
}

// The R = 4 rows, then the last rows one at a time, of output rows [n0, n1).
template <bool kShort>
AVX2_FN void gemv_a8(const int8_t *xq, const int32_t *xsum, const int16_t *xstart, float xs, const uint8_t *W,
                     int64_t ldw, const float *S, int64_t G, int64_t g, float *y, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4)
    gemv_a8_rows<4, kShort>(xq, xsum, xstart, xs, W + n * ldw, ldw, S + n * G, G, g, y + n);
  for (; n < n1; ++n) gemv_a8_rows<1, kShort>(xq, xsum, xstart, xs, W + n * ldw, ldw, S + n * G, G, g, y + n);
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

}  // namespace

void a8_group_starts(const int32_t *xsum, int64_t M, int64_t G, int16_t *start) {
  std::fill(start, start + M * G * 16, (int16_t)0);
  for (int64_t i = 0; i < M * G; ++i) {
    const int32_t c = -xsum[i];
    start[i * 16] = (int16_t)(c >> 1);
    start[i * 16 + 1] = (int16_t)(c - (c >> 1));
  }
}

void avx2_a8(const int8_t *xq, const int32_t *xsum, const int16_t *xstart, const float *xs, const uint8_t *W,
             const float *S, float *y, int64_t M, int64_t K, int64_t N, int64_t G, int64_t n0, int64_t n1) {
  const int64_t ldw = K / 4, g = K / G;
  const bool blocks = g % 128 == 0, short_groups = avx2_a8_short_groups(g);
  if (M < 2) {  // decode: the one-stream GEMVs, 4 rows at a time where groups are whole blocks
    for (int64_t m = 0; m < M; ++m) {
      if (blocks) {
        if (short_groups)
          gemv_a8<true>(xq + m * K, xsum + m * G, xstart + m * G * 16, xs[m], W, ldw, S, G, g, y + m * N, n0, n1);
        else
          gemv_a8<false>(xq + m * K, xsum + m * G, nullptr, xs[m], W, ldw, S, G, g, y + m * N, n0, n1);
      } else {
        for (int64_t n = n0; n < n1; ++n)
          gemv_a8_row_slots(xq + m * K, xsum + m * G, xs[m], W + n * ldw, S + n * G, G, g, y + m * N + n);
      }
    }
    return;
  }
  const int64_t MB = 64;  // token panels of at most 64 x K bytes, which stay in L2 while the rows stream
  for (int64_t m0 = 0; m0 < M; m0 += MB) {
    const int64_t m1 = std::min(M, m0 + MB);
    for (int64_t nb = n0; nb < n1; nb += 48) {
      const int64_t nb1 = std::min(n1, nb + 48);
      if (blocks)
        (short_groups ? run_a8_block_tiles<true> : run_a8_block_tiles<false>)(xq, xsum, xstart, xs, W, S, y, K, N, G,
                                                                              m0, m1, nb, nb1);
      else
        run_a8_tiles<2, 2>(xq, xsum, xs, W, S, y, K, N, G, m0, m1, nb, nb1);
    }
  }
}

}  // namespace bitcpm
#endif  // BITCPM_X86
