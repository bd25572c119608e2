// Fused attention with rotary embedding and grouped-query heads, forward and backward, as
// MindFormers' LLaMA computes it on CPU (no flash attention):
//   qr = rope(q), kr = rope(k)        rope(x) = x * cos + concat(-x2, x1) * sin  (use_rope_slice)
//   s_ij = (qr_i . kr_j) * scale + mask_ij         (additive mask [Bm, 1, S, S], Bm in {1, B})
//   p = softmax_j(s), o_i = sum_j p_ij v_j         head h reads kv head h / (H / Hkv)
// Inputs q [B, S, H*D], k and v [B, S, Hkv*D] (the projections' outputs), cos / sin [Bc, S, D]
// (Bc = 1: one position table for the batch; Bc = B: per-row positions, e.g. packed documents whose
// positions restart at every document);
// output o [B, S, H*D] (what the output projection reads) and stats [B, H, S, 2] = (lse, n): the
// row's log-sum-exp and the number of leading keys the row was computed over.
//
// Masked keys: a row is computed over keys [0, n) where n covers every key with mask > kDeadMask
// (rows are processed in blocks of kR, n is the block's largest). Keys j >= n are skipped only when
// their exp provably underflows to exactly 0 in float32 in the unfused computation too:
//   |s_ij - mask_ij| <= scale * |qr_i| * max_j |kr_j|   (Cauchy-Schwarz, with a 1e-3 relative slack)
// so if scale*|qr_i|*kmax + max_{j>=n} mask_ij < rowmax - kUnderflowMargin, every skipped key has
// exp(s_ij - rowmax) == 0. Otherwise (or when a row has no unmasked key at all) the block is
// recomputed over all S keys. The result is the full softmax up to float rounding order.

constexpr int kR = 4;  // query rows per block

struct RowMaskInfo {
  int32_t hi;     // 1 + the last key with mask > kDeadMask (0: none)
  float maxdead;  // max of mask over keys >= hi (-inf if hi == S)
};

static void mask_info(const float *mask, const AttnDims &dm, std::vector<RowMaskInfo> &info) {
  const int64_t S = dm.S;
  info.resize((size_t)(dm.Bm * S));
  for (int64_t r = 0; r < dm.Bm * S; ++r) {
    const float *m = mask + r * S;
    int64_t hi = S;
    float maxdead = -std::numeric_limits<float>::infinity();
    while (hi > 0 && m[hi - 1] <= kDeadMask) {
      maxdead = std::max(maxdead, m[hi - 1]);
      --hi;
    }
    info[r] = {(int32_t)hi, maxdead};
  }
}

// out[i, :] = rope(x[i*stride : +D]) for i < S (dense [S, D]).
static void rope_rows(const float *__restrict x, int64_t stride, const float *__restrict c,
                      const float *__restrict s, int64_t S, int64_t D, float *__restrict out) {
  const int64_t h = D / 2;
  for (int64_t i = 0; i < S; ++i) {
    const float *xr = x + i * stride, *cr = c + i * D, *sr = s + i * D;
    float *o = out + i * D;
    int64_t d = 0;
    for (; d + kW <= h; d += kW) {
      const vf x1 = vload(xr + d), x2 = vload(xr + d + h);
      vstore(o + d, x1 * vload(cr + d) + (-x2) * vload(sr + d));
      vstore(o + d + h, x2 * vload(cr + d + h) + x1 * vload(sr + d + h));
    }
    for (; d < h; ++d) {
      o[d] = xr[d] * cr[d] + (-xr[d + h]) * sr[d];
      o[d + h] = xr[d + h] * cr[d + h] + xr[d] * sr[d + h];
    }
  }
}

// The transpose of rope: dx[d] = g[d]*cos[d] + (d < h ? g[d+h]*sin[d+h] : -g[d-h]*sin[d-h]).
static void rope_back_row(const float *__restrict g, const float *__restrict cr, const float *__restrict sr,
                          int64_t D, float *__restrict dx) {
  const int64_t h = D / 2;
  int64_t d = 0;
  for (; d + kW <= h; d += kW) {
    const vf g1 = vload(g + d), g2 = vload(g + d + h);
    vstore(dx + d, g1 * vload(cr + d) + g2 * vload(sr + d + h));
    vstore(dx + d + h, g2 * vload(cr + d + h) - g1 * vload(sr + d));
  }
  for (; d < h; ++d) {
    dx[d] = g[d] * cr[d] + g[d + h] * sr[d + h];
    dx[d + h] = g[d + h] * cr[d + h] - g[d] * sr[d];
  }
}

static void transpose_sd(const float *__restrict a, int64_t S, int64_t D, float *__restrict at) {  // [S,D] -> [D,S]
  constexpr int64_t kT = 16;  // cache blocks
  for (int64_t i0 = 0; i0 < S; i0 += kT)
    for (int64_t d0 = 0; d0 < D; d0 += kT)
      for (int64_t i = i0; i < std::min(S, i0 + kT); ++i)
        for (int64_t d = d0; d < std::min(D, d0 + kT); ++d) at[d * S + i] = a[i * D + d];
}

static float dot(const float *__restrict a, const float *__restrict b, int64_t n) {
  vf acc = vf{};
  int64_t j = 0;
  for (; j + kW <= n; j += kW) acc += vload(a + j) * vload(b + j);
  float s = hsum(acc);
  for (; j < n; ++j) s += a[j] * b[j];
  return s;
}

static void gather_rows(const float *x, int64_t stride, int64_t S, int64_t D, float *out) {
  for (int64_t i = 0; i < S; ++i) std::memcpy(out + i * D, x + i * stride, (size_t)D * sizeof(float));
}

static float norm2(const float *x, int64_t D) { return std::sqrt(dot(x, x, D)); }

// Tile widths in vectors (set per instruction set by isa_*.cpp): FT_NV_COLS for the score-like
// products, FT_NV_MAT for the row-times-matrix products, so that the accumulators fit in the
// register file (32 zmm on AVX-512, 16 ymm on AVX2, 16 xmm on the baseline).
constexpr int kNvCols = FT_NV_COLS;
constexpr int kNvMat = FT_NV_MAT;

// C[r, j] = alpha * sum_d A[r, d] * BT[d, j] (+ mrow[r][j]) for r < kR, j < n.
// A: kR rows of D (ld D); BT: [D, ldb]; C: [kR, ldc].
static void rows_x_cols(const float *A, const float *BT, int64_t ldb, int64_t D, int64_t n, float alpha,
                        const float *const *mrow, float *C, int64_t ldc) {
  int64_t j = 0;
  for (; j + kNvCols * kW <= n; j += kNvCols * kW) {
    vf acc[kR][kNvCols] = {};
    for (int64_t d = 0; d < D; ++d) {
      vf b[kNvCols];
      for (int t = 0; t < kNvCols; ++t) b[t] = vload(BT + d * ldb + j + t * kW);
      for (int r = 0; r < kR; ++r) {
        const float a = A[r * D + d];
        for (int t = 0; t < kNvCols; ++t) acc[r][t] += a * b[t];
      }
    }
    for (int r = 0; r < kR; ++r)
      for (int t = 0; t < kNvCols; ++t) {
        vf c = acc[r][t] * alpha;
        if (mrow) c += vload(mrow[r] + j + t * kW);
        vstore(C + r * ldc + j + t * kW, c);
      }
  }
  for (; j < n; j += kW) {
    const int64_t m = std::min<int64_t>(kW, n - j);
    vf acc[kR] = {};
    for (int64_t d = 0; d < D; ++d) {
      const vf b = m == kW ? vload(BT + d * ldb + j) : vload_part(BT + d * ldb + j, m, 0.0f);
      for (int r = 0; r < kR; ++r) acc[r] += A[r * D + d] * b;
    }
    for (int r = 0; r < kR; ++r) {
      vf c = acc[r] * alpha;
      if (mrow) c += vload_part(mrow[r] + j, m, 0.0f);
      vstore_part(C + r * ldc + j, c, m);
    }
  }
}

// C[r, :] = sum_{j < n} P[r, j] * M[j, :] for r < kR; M [n, D] dense, C [kR, D].
static void rows_x_mat(const float *P, int64_t ldp, int64_t n, const float *M, int64_t D, float *C) {
  int64_t d = 0;
  for (; d + kNvMat * kW <= D; d += kNvMat * kW) {
    vf acc[kR][kNvMat] = {};
    for (int64_t j = 0; j < n; ++j) {
      vf mv[kNvMat];
      for (int t = 0; t < kNvMat; ++t) mv[t] = vload(M + j * D + d + t * kW);
      for (int r = 0; r < kR; ++r) {
        const float p = P[r * ldp + j];
        for (int t = 0; t < kNvMat; ++t) acc[r][t] += p * mv[t];
      }
    }
    for (int r = 0; r < kR; ++r)
      for (int t = 0; t < kNvMat; ++t) vstore(C + r * D + d + t * kW, acc[r][t]);
  }
  for (; d < D; d += kW) {
    const int64_t m = std::min<int64_t>(kW, D - d);
    vf acc[kR] = {};
    for (int64_t j = 0; j < n; ++j) {
      const vf mv = vload_part(M + j * D + d, m, 0.0f);
      for (int r = 0; r < kR; ++r) acc[r] += P[r * ldp + j] * mv;
    }
    for (int r = 0; r < kR; ++r) vstore_part(C + r * D + d, acc[r], m);
  }
}

// C[j, :] += sum_{r < kR} P[r, j] * X[r, :] for j < n; X [kR, D], C [n, D] dense.
static void cols_update(const float *P, int64_t ldp, int64_t n, const float *X, int64_t D, float *C) {
  int64_t d = 0;
  for (; d + kNvMat * kW <= D; d += kNvMat * kW) {
    vf x[kR][kNvMat];
    for (int r = 0; r < kR; ++r)
      for (int t = 0; t < kNvMat; ++t) x[r][t] = vload(X + r * D + d + t * kW);
    for (int64_t j = 0; j < n; ++j) {
      float *cr = C + j * D + d;
      vf c[kNvMat];
      for (int t = 0; t < kNvMat; ++t) c[t] = vload(cr + t * kW);
      for (int r = 0; r < kR; ++r) {
        const float p = P[r * ldp + j];
        for (int t = 0; t < kNvMat; ++t) c[t] += p * x[r][t];
      }
      for (int t = 0; t < kNvMat; ++t) vstore(cr + t * kW, c[t]);
    }
  }
  for (; d < D; d += kW) {
    const int64_t m = std::min<int64_t>(kW, D - d);
    vf x[kR];
    for (int r = 0; r < kR; ++r) x[r] = vload_part(X + r * D + d, m, 0.0f);
    for (int64_t j = 0; j < n; ++j) {
      vf c = vload_part(C + j * D + d, m, 0.0f);
      for (int r = 0; r < kR; ++r) c += P[r * ldp + j] * x[r];
      vstore_part(C + j * D + d, c, m);
    }
  }
}

// Per (b, kv head) unit: rotated keys, their transpose and norms; values (and their transpose).
struct KvUnit {
  std::vector<float> kr, kt, v, vt;
  float kmax = 0.0f;
  void load(const float *k, const float *vv, const float *c, const float *s, const AttnDims &dm, int64_t b, int64_t g,
            bool want_vt) {
    const int64_t S = dm.S, D = dm.D, kvw = dm.Hkv * D;
    kr.resize((size_t)S * D);
    kt.resize((size_t)S * D);
    v.resize((size_t)S * D);
    rope_rows(k + b * S * kvw + g * D, kvw, c, s, S, D, kr.data());
    transpose_sd(kr.data(), S, D, kt.data());
    gather_rows(vv + b * S * kvw + g * D, kvw, S, D, v.data());
    if (want_vt) {
      vt.resize((size_t)S * D);
      transpose_sd(v.data(), S, D, vt.data());
    }
    kmax = 0.0f;
    for (int64_t j = 0; j < S; ++j) kmax = std::max(kmax, norm2(kr.data() + j * D, D));
  }
};

// Scores of the query rows [i0, i0 + kR) of one head over keys [0, n): sc [kR, S].
static void block_scores(const float *qr, const KvUnit &kv, const float *mask_b, const AttnDims &dm, int64_t i0,
                         int64_t n, float *sc) {
  const float *mrow[kR];
  for (int r = 0; r < kR; ++r) mrow[r] = mask_b + std::min(i0 + r, dm.S - 1) * dm.S;
  rows_x_cols(qr + i0 * dm.D, kv.kt.data(), dm.S, dm.D, n, dm.scale, mrow, sc, dm.S);
}

// Forward of one block of rows: decides n, computes softmax rows into sc, writes o and stats.
static void forward_block(const float *qr, const KvUnit &kv, const float *mask_b, const RowMaskInfo *info_b,
                          const AttnDims &dm, int64_t b, int64_t h, int64_t i0, float *sc, float *ob, float *out,
                          float *stats) {
  const int64_t S = dm.S, D = dm.D;
  const int nr = (int)std::min<int64_t>(kR, S - i0);
  int64_t n = 0;
  bool full = false;
  for (int r = 0; r < nr; ++r) {
    n = std::max<int64_t>(n, info_b[i0 + r].hi);
    full |= info_b[i0 + r].hi == 0;
  }
  if (full) n = S;
  block_scores(qr, kv, mask_b, dm, i0, n, sc);
  float rmax[kR];
  for (int r = 0; r < nr; ++r) rmax[r] = row_max(sc + r * S, n);
  if (n < S) {
    for (int r = 0; r < nr && !full; ++r) {
      const float bound = dm.scale * norm2(qr + (i0 + r) * D, D) * kv.kmax * 1.001f + info_b[i0 + r].maxdead;
      full = !(bound < rmax[r] - kUnderflowMargin);  // also catches NaN
    }
    if (full) {
      n = S;
      block_scores(qr, kv, mask_b, dm, i0, n, sc);
      for (int r = 0; r < nr; ++r) rmax[r] = row_max(sc + r * S, n);
    }
  }
  for (int r = 0; r < nr; ++r) {
    float *p = sc + r * S;
    const float sum = exp_shift_sum(p, n, rmax[r]);
    const float inv = 1.0f / sum;
    int64_t j = 0;
    for (; j + kW <= n; j += kW) vstore(p + j, vload(p + j) * inv);
    for (; j < n; ++j) p[j] *= inv;
    float *st = stats + ((b * dm.H + h) * S + i0 + r) * 2;
    st[0] = rmax[r] + std::log(sum);
    st[1] = (float)n;
  }
  for (int r = nr; r < kR; ++r)
    for (int64_t j = 0; j < n; ++j) sc[r * S + j] = 0.0f;
  rows_x_mat(sc, S, n, kv.v.data(), D, ob);
  for (int r = 0; r < nr; ++r)
    std::memcpy(out + (b * S + i0 + r) * dm.H * D + h * D, ob + r * D, (size_t)D * sizeof(float));
}

static int64_t padded_rows(int64_t S) { return (S + kR - 1) / kR * kR; }

static void attention_forward(const float *q, const float *k, const float *v, const float *cos_t,
                              const float *sin_t, const float *mask, const AttnDims &dm, float *out, float *stats,
                              int nthreads) {
  std::vector<RowMaskInfo> info;
  mask_info(mask, dm, info);
  const int64_t rep = dm.H / dm.Hkv, S = dm.S, D = dm.D;
  parallel_for(dm.B * dm.Hkv, nthreads, 1, [&](int64_t u0, int64_t u1) {
    KvUnit kv;
    std::vector<float> qr((size_t)padded_rows(S) * D, 0.0f), sc((size_t)kR * S), ob((size_t)kR * D);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / dm.Hkv, g = u % dm.Hkv, bm = dm.Bm == 1 ? 0 : b;
      const float *cos_b = cos_t + (dm.Bc == 1 ? 0 : b) * S * D, *sin_b = sin_t + (dm.Bc == 1 ? 0 : b) * S * D;
      kv.load(k, v, cos_b, sin_b, dm, b, g, false);
      for (int64_t h = g * rep; h < (g + 1) * rep; ++h) {
        rope_rows(q + b * S * dm.H * D + h * D, dm.H * D, cos_b, sin_b, S, D, qr.data());
        for (int64_t i0 = 0; i0 < S; i0 += kR)
          forward_block(qr.data(), kv, mask + bm * S * S, info.data() + bm * S, dm, b, h, i0, sc.data(), ob.data(),
                        out, stats);
      }
    }
  });
}

// Backward: recomputes p = exp(s - lse) over each row's n keys, then
//   dV += P^T dO;  dP = dO V^T;  dS = P * (dP - rowsum(dO * O)) * scale;  dQr = dS Kr;  dKr += dS^T Qr
// and maps dQr / dKr back through rope. One thread owns each (b, kv head): dK / dV need no atomics.
static void attention_backward(const float *q, const float *k, const float *v, const float *cos_t,
                               const float *sin_t, const float *mask, const AttnDims &dm, const float *out,
                               const float *stats, const float *dout, float *dq, float *dk, float *dv,
                               int nthreads) {
  const int64_t rep = dm.H / dm.Hkv, S = dm.S, D = dm.D, qw = dm.H * D, kvw = dm.Hkv * D;
  parallel_for(dm.B * dm.Hkv, nthreads, 1, [&](int64_t u0, int64_t u1) {
    KvUnit kv;
    const int64_t Sp = padded_rows(S);
    std::vector<float> qr((size_t)Sp * D, 0.0f), go((size_t)Sp * D, 0.0f), delta((size_t)S);
    std::vector<float> P((size_t)kR * S), dP((size_t)kR * S), dqr((size_t)kR * D), tmp((size_t)D);
    std::vector<float> dkr((size_t)S * D), dvv((size_t)S * D);
    for (int64_t u = u0; u < u1; ++u) {
      const int64_t b = u / dm.Hkv, g = u % dm.Hkv, bm = dm.Bm == 1 ? 0 : b;
      const float *mask_b = mask + bm * S * S;
      const float *cos_b = cos_t + (dm.Bc == 1 ? 0 : b) * S * D, *sin_b = sin_t + (dm.Bc == 1 ? 0 : b) * S * D;
      kv.load(k, v, cos_b, sin_b, dm, b, g, true);
      std::fill(dkr.begin(), dkr.end(), 0.0f);
      std::fill(dvv.begin(), dvv.end(), 0.0f);
      for (int64_t h = g * rep; h < (g + 1) * rep; ++h) {
        rope_rows(q + b * S * qw + h * D, qw, cos_b, sin_b, S, D, qr.data());
        gather_rows(dout + b * S * qw + h * D, qw, S, D, go.data());
        for (int64_t i = 0; i < S; ++i) delta[i] = dot(go.data() + i * D, out + (b * S + i) * qw + h * D, D);
        const float *st = stats + (b * dm.H + h) * S * 2;
        for (int64_t i0 = 0; i0 < S; i0 += kR) {
          const int nr = (int)std::min<int64_t>(kR, S - i0);
          int64_t n = 0;
          for (int r = 0; r < nr; ++r) n = std::max<int64_t>(n, (int64_t)st[(i0 + r) * 2 + 1]);
          n = std::min(n, S);
          block_scores(qr.data(), kv, mask_b, dm, i0, n, P.data());
          for (int r = 0; r < kR; ++r) {
            float *p = P.data() + r * S;
            if (r >= nr) {
              for (int64_t j = 0; j < n; ++j) p[j] = 0.0f;
              continue;
            }
            const float lse = st[(i0 + r) * 2];
            const int64_t nrow = std::min<int64_t>((int64_t)st[(i0 + r) * 2 + 1], n);
            exp_shift_sum(p, nrow, lse);
            for (int64_t j = nrow; j < n; ++j) p[j] = 0.0f;
          }
          rows_x_cols(go.data() + i0 * D, kv.vt.data(), S, D, n, 1.0f, nullptr, dP.data(), S);
          cols_update(P.data(), S, n, go.data() + i0 * D, D, dvv.data());
          for (int r = 0; r < kR; ++r) {
            const float *p = P.data() + r * S;
            float *dp = dP.data() + r * S;
            const float dl = r < nr ? delta[i0 + r] : 0.0f;
            int64_t j = 0;
            for (; j + kW <= n; j += kW) vstore(dp + j, vload(p + j) * (vload(dp + j) - dl) * dm.scale);
            for (; j < n; ++j) dp[j] = p[j] * (dp[j] - dl) * dm.scale;
          }
          rows_x_mat(dP.data(), S, n, kv.kr.data(), D, dqr.data());
          cols_update(dP.data(), S, n, qr.data() + i0 * D, D, dkr.data());
          for (int r = 0; r < nr; ++r) {
            const int64_t i = i0 + r;
            rope_back_row(dqr.data() + r * D, cos_b + i * D, sin_b + i * D, D, dq + (b * S + i) * qw + h * D);
          }
        }
      }
      for (int64_t j = 0; j < S; ++j) {
        rope_back_row(dkr.data() + j * D, cos_b + j * D, sin_b + j * D, D, dk + (b * S + j) * kvw + g * D);
        std::memcpy(dv + (b * S + j) * kvw + g * D, dvv.data() + j * D, (size_t)D * sizeof(float));
      }
    }
  });
}
