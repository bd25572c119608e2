// Row-wise fused kernels: cross-entropy over the vocabulary, RMSNorm, SwiGLU (forward and backward).
// Included once per instruction set by isa_*.cpp, inside namespace bitcpm::ft::FT_ISA.
// References (the spec): bitcpm_ms/fused/reference.py.

// ---------------------------------------------------------------- shared row helpers
// x[j] <- exp(x[j] - m) for j < n; returns the sum (fixed order).
static float exp_shift_sum(float *x, int64_t n, float m) {
  vf acc = vf{};
  int64_t j = 0;
  for (; j + kW <= n; j += kW) {
    vf e = vexp(vload(x + j) - m);
    vstore(x + j, e);
    acc += e;
  }
  if (j < n) {
    vf e = vexp(vload_part(x + j, n - j, -std::numeric_limits<float>::infinity()) - m);
    vstore_part(x + j, e, n - j);
    acc += e;
  }
  return hsum(acc);
}

static float row_max(const float *x, int64_t n) {
  const float ninf = -std::numeric_limits<float>::infinity();
  vf acc = vset(ninf);
  int64_t j = 0;
  for (; j + kW <= n; j += kW) acc = vmax(acc, vload(x + j));
  if (j < n) acc = vmax(acc, vload_part(x + j, n - j, ninf));
  return hmax(acc);
}

// ---------------------------------------------------------------- cross-entropy
// loss[i] = log(sum_j exp(x_ij - m_i)) - (x_i,label - m_i) with m_i = max_j x_ij (MindFormers'
// CrossEntropyLoss per-token term); 0 when the label is outside [0, V) (its one-hot row is all
// zeros). lse[i] = m_i + log(sum) is kept for the backward.
static void ce_forward(const float *logits, const int32_t *labels, int64_t N, int64_t V, float *loss, float *lse,
                       int nthreads) {
  parallel_for(N, nthreads, 1, [&](int64_t r0, int64_t r1) {
    const float ninf = -std::numeric_limits<float>::infinity();
    for (int64_t i = r0; i < r1; ++i) {
      const float *x = logits + i * V;
      const float m = row_max(x, V);
      vf acc = vf{};
      int64_t j = 0;
      for (; j + kW <= V; j += kW) acc += vexp(vload(x + j) - m);
      if (j < V) acc += vexp(vload_part(x + j, V - j, ninf) - m);
      const float log_sum = std::log(hsum(acc));
      const int32_t y = labels[i];
      loss[i] = (y >= 0 && y < V) ? log_sum - (x[y] - m) : 0.0f;
      lse[i] = m + log_sum;
    }
  });
}

// dlogits[i, j] = exp(x_ij - lse_i) * (dloss_i + dlse_i) - [j == label_i] * dloss_i.
static void ce_backward(const float *logits, const int32_t *labels, const float *lse, const float *dloss,
                        const float *dlse, int64_t N, int64_t V, float *dlogits, int nthreads) {
  parallel_for(N, nthreads, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const float *x = logits + i * V;
      float *g = dlogits + i * V;
      const float c = lse[i];
      const vf scale = vset(dloss[i] + (dlse ? dlse[i] : 0.0f));
      int64_t j = 0;
      for (; j + kW <= V; j += kW) vstore(g + j, vexp(vload(x + j) - c) * scale);
      if (j < V) vstore_part(g + j, vexp(vload_part(x + j, V - j, 0.0f) - c) * scale, V - j);
      const int32_t y = labels[i];
      if (y >= 0 && y < V) g[y] -= dloss[i];
    }
  });
}

// ---------------------------------------------------------------- distillation (CE + KL, one op)
// Per row i of student logits s and teacher logits t (c = 1 / T), the two terms of the distillation loss:
//   lse1 = log sum_j exp(s_j),  lse_s = log sum_j exp(c s_j),  lse_t = log sum_j exp(c t_j)
//   ce[i] = lse1 - s_label      (0 when the label is outside [0, V), as MindFormers' CrossEntropyLoss)
//   kl[i] = sum_j p_j c (t_j - s_j) - lse_t + lse_s,   p_j = exp(c t_j - lse_t)   (KL(p_T || p_S))
// One op instead of a cross-entropy and a KL op: each row pair is read from memory once (the second
// pass over a 4-32 KB row hits the cache) and the backward writes one gradient (no AddN of two).
// stats[i] = (lse1, lse_s, lse_t) is kept for the backward. Rows are independent: any thread count
// gives the same bits.
static void distill_forward(const float *s, const float *t, const int32_t *labels, int64_t N, int64_t V, float c,
                            float *ce, float *kl, float *stats, int nthreads) {
  const bool soft = c != 1.0f;
  parallel_for(N, nthreads, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const float *sr = s + i * V, *tr = t + i * V;
      const float m1 = row_max(sr, V), ms = m1 * c, mt = row_max(tr, V) * c;
      vf e1 = vf{}, es = vf{}, et = vf{}, etd = vf{};
      int64_t j = 0;
      for (; j + kW <= V; j += kW) {
        const vf x = vload(sr + j), a = x * c, b = vload(tr + j) * c;
        const vf e = vexp(b - mt);
        e1 += vexp(x - m1);
        if (soft) es += vexp(a - ms);
        et += e;
        etd += e * (b - a);
      }
      float t1 = 0.0f, ts = 0.0f, tt = 0.0f, ttd = 0.0f;  // the tail, lane by lane
      for (; j < V; ++j) {
        const float a = sr[j] * c, b = tr[j] * c, e = sexp(b - mt);
        t1 += sexp(sr[j] - m1);
        if (soft) ts += sexp(a - ms);
        tt += e;
        ttd += e * (b - a);
      }
      const float sum1 = hsum(e1) + t1, sum_t = hsum(et) + tt;
      const float lse1 = m1 + std::log(sum1);
      const float lse_s = soft ? ms + std::log(hsum(es) + ts) : lse1;
      const float lse_t = mt + std::log(sum_t);
      const int32_t y = labels[i];
      ce[i] = (y >= 0 && y < V) ? lse1 - sr[y] : 0.0f;
      kl[i] = (hsum(etd) + ttd) / sum_t - lse_t + lse_s;
      stats[3 * i] = lse1;
      stats[3 * i + 1] = lse_s;
      stats[3 * i + 2] = lse_t;
    }
  });
}

// ds[i, j] = dce[i] (exp(s_ij - lse1) - [j == label]) + dkl[i] c (exp(c s_ij - lse_s) - exp(c t_ij - lse_t)).
// The teacher gets no gradient.
static void distill_backward(const float *s, const float *t, const int32_t *labels, const float *stats,
                             const float *dce, const float *dkl, int64_t N, int64_t V, float c, float *ds,
                             int nthreads) {
  const bool soft = c != 1.0f;
  parallel_for(N, nthreads, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const float *sr = s + i * V, *tr = t + i * V;
      float *g = ds + i * V;
      const float lse1 = stats[3 * i], lse_s = stats[3 * i + 1], lse_t = stats[3 * i + 2];
      const float gc = dce[i], gk = dkl[i] * c;
      int64_t j = 0;
      for (; j + kW <= V; j += kW) {
        const vf x = vload(sr + j);
        const vf p1 = vexp(x - lse1);
        const vf ps = soft ? vexp(x * c - lse_s) : p1;
        vstore(g + j, p1 * gc + (ps - vexp(vload(tr + j) * c - lse_t)) * gk);
      }
      for (; j < V; ++j) {
        const float p1 = sexp(sr[j] - lse1), ps = soft ? sexp(sr[j] * c - lse_s) : p1;
        g[j] = p1 * gc + (ps - sexp(tr[j] * c - lse_t)) * gk;
      }
      const int32_t y = labels[i];
      if (y >= 0 && y < V) g[y] -= gc;
    }
  });
}

// ---------------------------------------------------------------- RMSNorm
// y = (x * rstd) * w, rstd = 1 / sqrt(mean(x^2) + eps) per row of D.
static void rmsnorm_forward(const float *x, const float *w, int64_t N, int64_t D, float eps, float *y, float *rstd,
                            int nthreads) {
  parallel_for(N, nthreads, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const float *xr = x + i * D;
      float *yr = y + i * D;
      vf acc = vf{};
      int64_t d = 0;
      for (; d + kW <= D; d += kW) {
        vf v = vload(xr + d);
        acc += v * v;
      }
      if (d < D) {
        vf v = vload_part(xr + d, D - d, 0.0f);
        acc += v * v;
      }
      const float r = 1.0f / std::sqrt(hsum(acc) / (float)D + eps);
      rstd[i] = r;
      d = 0;
      for (; d + kW <= D; d += kW) vstore(yr + d, (vload(xr + d) * r) * vload(w + d));
      for (; d < D; ++d) yr[d] = (xr[d] * r) * w[d];
    }
  });
}

// dx = rstd * (dy*w - xhat * mean(dy*w*xhat)), xhat = x * rstd;  dw = sum over rows of dy * xhat.
// dw is summed per chunk of kRowChunk rows, then over chunks in order (thread-count independent).
static void rmsnorm_backward(const float *x, const float *w, const float *rstd, const float *dy, int64_t N,
                             int64_t D, float *dx, float *dw, int nthreads) {
  const int64_t nchunk = (N + kRowChunk - 1) / kRowChunk;
  std::vector<float> part((size_t)(nchunk > 0 ? nchunk : 1) * D, 0.0f);
  parallel_for(nchunk, nthreads, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float *pw = part.data() + c * D;
      const int64_t i1 = std::min(N, (c + 1) * kRowChunk);
      for (int64_t i = c * kRowChunk; i < i1; ++i) {
        const float *xr = x + i * D, *gr = dy + i * D;
        float *dxr = dx + i * D;
        const float r = rstd[i];
        vf acc = vf{};
        int64_t d = 0;
        for (; d + kW <= D; d += kW) {
          vf xh = vload(xr + d) * r, gw = vload(gr + d) * vload(w + d);
          acc += gw * xh;
          vstore(pw + d, vload(pw + d) + vload(gr + d) * xh);
        }
        float tail = 0.0f;
        for (int64_t t = d; t < D; ++t) {
          const float xh = xr[t] * r;
          tail += gr[t] * w[t] * xh;
          pw[t] += gr[t] * xh;
        }
        const float mean = (hsum(acc) + tail) / (float)D;
        d = 0;
        for (; d + kW <= D; d += kW) {
          vf xh = vload(xr + d) * r, gw = vload(gr + d) * vload(w + d);
          vstore(dxr + d, (gw - xh * mean) * r);
        }
        for (; d < D; ++d) dxr[d] = (gr[d] * w[d] - xr[d] * r * mean) * r;
      }
    }
  });
  for (int64_t d = 0; d < D; ++d) dw[d] = 0.0f;
  for (int64_t c = 0; c < nchunk; ++c)
    for (int64_t d = 0; d < D; ++d) dw[d] += part[c * D + d];
}

// ---------------------------------------------------------------- SwiGLU
// h = silu(g) * u, silu(g) = g * sigmoid(g) (MindFormers: w1 has the SiLU, then w3(x) * gate).
static void swiglu_forward(const float *g, const float *u, int64_t n, float *h, int nthreads) {
  const int64_t blk = 4096;
  parallel_for((n + blk - 1) / blk, nthreads, 1, [&](int64_t b0, int64_t b1) {
    const int64_t j0 = b0 * blk, j1 = std::min(n, b1 * blk);
    int64_t j = j0;
    for (; j + kW <= j1; j += kW) {
      vf gv = vload(g + j);
      vstore(h + j, vload(u + j) * (gv * vsigmoid(gv)));
    }
    if (j < j1) {
      vf gv = vload_part(g + j, j1 - j, 0.0f);
      vstore_part(h + j, vload_part(u + j, j1 - j, 0.0f) * (gv * vsigmoid(gv)), j1 - j);
    }
  });
}

// du = dh * silu(g);  dg = dh * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))).
static void swiglu_backward(const float *g, const float *u, const float *dh, int64_t n, float *dg, float *du,
                            int nthreads) {
  const int64_t blk = 4096;
  parallel_for((n + blk - 1) / blk, nthreads, 1, [&](int64_t b0, int64_t b1) {
    const int64_t j0 = b0 * blk, j1 = std::min(n, b1 * blk);
    int64_t j = j0;
    for (; j + kW <= j1; j += kW) {
      vf gv = vload(g + j), s = vsigmoid(gv), hv = vload(dh + j);
      vstore(du + j, hv * (gv * s));
      vstore(dg + j, hv * vload(u + j) * (s * (1.0f + gv * (1.0f - s))));
    }
    if (j < j1) {
      const int64_t m = j1 - j;
      vf gv = vload_part(g + j, m, 0.0f), uv = vload_part(u + j, m, 0.0f), hv = vload_part(dh + j, m, 0.0f);
      vf s = vsigmoid(gv);
      vstore_part(du + j, hv * (gv * s), m);
      vstore_part(dg + j, hv * uv * (s * (1.0f + gv * (1.0f - s))), m);
    }
  });
}

// ---------------------------------------------------------------- AdamW (MindFormers' AdamW)
// In MindFormers' order of operations (mindformers/core/optim/adamw.py, _update_run_op), on the
// gradient times `gscale` (the train-step wrapper's global-norm clip factor, 1 when not clipping):
//   g = g_in * gscale (rounded to float32, as the separate scaling pass it replaces)
//   p1 = p * (1 - lr*wd);  m' = m*b1 + g*(1-b1);  v' = v*b2 + g*g*(1-b2)
//   p' = p1 - (m' / (sqrt(v' / (1 - b2^t)) + eps)) * (lr / (1 - b1^t))
// One pass over the four tensors; outputs p', m', v' (the optimizer assigns them).
static void adamw_update(const float *p, const float *g, const float *m, const float *v, int64_t n, float lr,
                         float wd, float b1, float b2, float eps, float step, float gscale, float *p_out,
                         float *m_out, float *v_out, int nthreads) {
  const float decay = 1.0f - lr * wd, c1 = 1.0f - b1, c2 = 1.0f - b2;
  const float bc1 = 1.0f - std::pow(b1, step), bc2 = 1.0f - std::pow(b2, step);
  const float step_size = lr / bc1;
  const int64_t blk = 4096;
  parallel_for((n + blk - 1) / blk, nthreads, 1, [&](int64_t b0, int64_t b1_) {
    const int64_t j0 = b0 * blk, j1 = std::min(n, b1_ * blk);
    int64_t j = j0;
    for (; j + kW <= j1; j += kW) {
      const vf gv = vload(g + j) * gscale;
      const vf mv = vload(m + j) * b1 + gv * c1;
      const vf vv = vload(v + j) * b2 + gv * gv * c2;
      vstore(m_out + j, mv);
      vstore(v_out + j, vv);
      vstore(p_out + j, vload(p + j) * decay - (mv / (vsqrt(vv / bc2) + eps)) * step_size);
    }
    for (; j < j1; ++j) {
      const float gj = g[j] * gscale;
      const float mv = m[j] * b1 + gj * c1, vv = v[j] * b2 + gj * gj * c2;
      m_out[j] = mv;
      v_out[j] = vv;
      p_out[j] = p[j] * decay - (mv / (std::sqrt(vv / bc2) + eps)) * step_size;
    }
  });
}

// Sum of squares of a tensor (the train-step wrapper's global norm), in float32 like
// ReduceSum(Square(g)); per-block partial sums added in a fixed order.
static void sum_squares(const float *x, int64_t n, float *out, int nthreads) {
  const int64_t blk = 1 << 14, nb = (n + blk - 1) / blk;
  std::vector<float> part((size_t)(nb > 0 ? nb : 1), 0.0f);
  parallel_for(nb, nthreads, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t j0 = b * blk, j1 = std::min(n, j0 + blk);
      vf acc = vf{};
      int64_t j = j0;
      for (; j + kW <= j1; j += kW) {
        const vf xv = vload(x + j);
        acc += xv * xv;
      }
      float s = hsum(acc);
      for (; j < j1; ++j) s += x[j] * x[j];
      part[b] = s;
    }
  });
  float total = 0.0f;
  for (int64_t b = 0; b < nb; ++b) total += part[b];
  out[0] = total;
}
