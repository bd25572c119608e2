// DecodeLayer: one whole decoder layer of a packed ternary MiniCPM/LLaMA model for one decode step,
// as one AOT op (bitcpm_ms/inference/fused_layer.py). Reference: decode_layer_reference in
// bitcpm_ms/kernels/decode_layer.py.
//
// Why: at decode time a layer is ~25 MindSpore ops (norms, seven projections, attention, SwiGLU,
// residuals) and MindSpore's CPU runtime costs ~40 us per op launch, more than the kernels of a small
// model (docs/generation.md, "Where the time goes"). One op per layer keeps the step graph at
// L + 4 ops. The arithmetic is the same kernels the unfused graph calls (matmul_impl for every
// projection, decode_attention_impl for RoPE + attention), in the model's order:
//   x  = rmsnorm(h, w_attn_norm, eps_attn)          = h * (1 / sqrt(mean(h^2) + eps)) * w
//   q, k, v = x Wq^T, x Wk^T, x Wv^T                (packed ternary; A8 quantizes x per row, once for
//                                                    the three: matmul_multi_impl, one parallel region)
//   ctx, k_rot = decode_attention(q, k, v, caches, positions, cos, sin, 1/sqrt(D))
//   h1 = h + (ctx Wo^T) * c                         (c: MiniCPM residual scale, 1 for LLaMA)
//   x2 = rmsnorm(h1, w_ffn_norm, eps_ffn)
//   h_out = h1 + (silu(x2 W1^T) * (x2 W3^T)) W2^T * c   (gate and up: one quantization, one region)
// Outputs h_out [B,H], k_rot [B,KVH*D] (rotated new key) and v [B,KVH*D] (new value) for the cache.
//
// spec[7] = 1 (write_cache) also stores k_rot and v into slot positions[b] of the caches, in place,
// before attention, which reads only slots < positions[b] (rows whose position is S, a full cache, are
// not stored). The
// multi-step decode graph (bitcpm_ms/inference/decoder.py, DecodeMultiStepGraph) needs it: step j+1
// of one graph call must see step j's keys. The caches are host-owned numpy memory that MindSpore
// passes by pointer (cache.py); the write is ordered by data flow, since step j+1 of layer l consumes
// a token computed from step j's output of every layer.

#include <cmath>
#include <cstring>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "ternary_common.h"

namespace bitcpm {

void rmsnorm_rows(const float *x, const float *w, float eps, int64_t B, int64_t H, float *out) {
  for (int64_t b = 0; b < B; ++b) {
    const float *xb = x + b * H;
    float ss = 0.0f;
    for (int64_t i = 0; i < H; ++i) ss += xb[i] * xb[i];
    const float r = 1.0f / std::sqrt(ss / (float)H + eps);
    for (int64_t i = 0; i < H; ++i) out[b * H + i] = (xb[i] * r) * w[i];
  }
}

namespace {

// The element-wise steps (RMSNorms, SwiGLU, residuals) over rows [0, B) of `width` values: split over
// the pool when there are many rows (a prompt pass: ~8% of a 128-token prefill, which would otherwise
// run on one thread), on the calling thread for a decode step.
template <typename F>
void for_rows(int64_t B, int64_t width, F fn) {
  const int nt = B > 1 && B * width >= (int64_t(1) << 16) ? resolve_threads(0) : 1;
  parallel_for(B, nt, 1, fn);
}

}  // namespace

int decode_layer_impl(const float *h, const float *w_attn_norm, const float *w_ffn_norm, const PackedProj *proj,
                      KVCacheRef cache, const int32_t *pos, const float *cos, const float *sin, const float *spec,
                      int64_t B, int64_t H, int64_t KVH, int64_t S, int64_t D, float *h_out, float *k_rot,
                      float *v_out, const int32_t *cache_rows) {
  const float eps_attn = spec[0], eps_ffn = spec[1], res_scale = spec[2], attn_scale = spec[3];
  const int64_t heads = (int64_t)spec[4];
  const int act_bits = (int)spec[5];
  const float a8_eps = spec[6];
  const bool write_cache = spec[7] != 0.0f;
  SpinSession spin;  // 4-5 parallel regions: workers poll between them (threads.cpp)
  if (heads * D != H) return set_error(3, "DecodeLayer: heads * head_dim must equal the hidden size");
  const PackedProj &wq = proj[0], &wk = proj[1], &wv = proj[2], &wo = proj[3], &w1 = proj[4], &w3 = proj[5],
             &w2 = proj[6];
  const int64_t I = w1.N;
  if (wq.K != H || wq.N != H || wk.K != H || wk.N != KVH * D || wv.K != H || wv.N != KVH * D || wo.K != H ||
      wo.N != H || w1.K != H || w3.K != H || w3.N != I || w2.K != I || w2.N != H)
    return set_error(3, "DecodeLayer: projection shapes do not fit hidden " + std::to_string(H) + ", KV " +
                            std::to_string(KVH * D) + ", intermediate " + std::to_string(I));
  std::vector<float> x(B * H), q(B * H), k(B * KVH * D), ctx(B * H), o(B * H), gate(B * I), up(B * I);
  auto mm = [&](const float *in, const PackedProj &p, float *out) {
    return matmul_impl(in, p.packed, p.scales, out, B, p.K, p.N, p.G, act_bits, a8_eps, 0, 0);
  };
  // Projections of the same input (q/k/v, gate/up): one activation quantization and one parallel
  // region when their scale groups agree (they do in every model we convert), else one call each.
  auto mm_shared = [&](const float *in, std::initializer_list<std::pair<const PackedProj *, float *>> outs) {
    const uint8_t *W[3];
    const float *S[3];
    float *Y[3];
    int64_t N[3];
    int n = 0;
    bool same = true;
    for (const auto &o : outs) {
      W[n] = o.first->packed, S[n] = o.first->scales, Y[n] = o.second, N[n] = o.first->N;
      same = same && o.first->G == outs.begin()->first->G;
      ++n;
    }
    if (same) return matmul_multi_impl(in, n, W, S, Y, N, B, outs.begin()->first->K, outs.begin()->first->G,
                                       act_bits, a8_eps, 0);
    for (const auto &o : outs)
      if (int rc = mm(in, *o.first, o.second)) return rc;
    return 0;
  };
  int rc;
  for_rows(B, H, [&](int64_t lo, int64_t hi) {
    rmsnorm_rows(h + lo * H, w_attn_norm, eps_attn, hi - lo, H, x.data() + lo * H);
  });
  if ((rc = mm_shared(x.data(), {{&wq, q.data()}, {&wk, k.data()}, {&wv, v_out}}))) return rc;
  // The new keys and values go into the cache before attention: a row at position p reads slots < p
  // only (its own key and value in float32), so for one token per cache row the order does not matter,
  // and the tokens of a prompt sharing a cache row (cache_rows, PrefillModel) see every earlier one.
  if (write_cache) {
    rope_keys(k.data(), cos, sin, B, KVH, D, k_rot);
    for (int64_t b = 0; b < B; ++b) {
      if (pos[b] >= S) continue;
      const int64_t row = cache_rows ? cache_rows[b] : b;
      for (int64_t g = 0; g < KVH; ++g) {
        const int64_t slot = ((row * KVH + g) * S + pos[b]) * D, src = (b * KVH + g) * D;
        store_cache_row(cache, false, slot, k_rot + src, D);
        store_cache_row(cache, true, slot, v_out + src, D);
      }
    }
  }
  rc = decode_attention_impl(q.data(), k.data(), v_out, cache, pos, cos, sin, attn_scale, B, heads, KVH, S, D,
                             ctx.data(), k_rot, 0, cache_rows);
  if (rc) return rc;
  if ((rc = mm(ctx.data(), wo, o.data()))) return rc;
  for_rows(B, H, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo * H; i < hi * H; ++i) h_out[i] = h[i] + o[i] * res_scale;  // h1, kept in h_out
    rmsnorm_rows(h_out + lo * H, w_ffn_norm, eps_ffn, hi - lo, H, x.data() + lo * H);
  });
  if ((rc = mm_shared(x.data(), {{&w1, gate.data()}, {&w3, up.data()}}))) return rc;
  for_rows(B, I, [&](int64_t lo, int64_t hi) {
    silu_mul_rows(gate.data() + lo * I, up.data() + lo * I, (hi - lo) * I);  // silu(gate) * up
  });
  if ((rc = mm(gate.data(), w2, o.data()))) return rc;
  for_rows(B, H, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo * H; i < hi * H; ++i) h_out[i] = h_out[i] + o[i] * res_scale;
  });
  return 0;
}

int layer_params(const char *op, void **params, const int *ndims, int64_t *const *shapes, const char *const *dtypes,
                 int first, const float **norms, PackedProj *proj) {
  for (int i = first; i < first + 16; ++i) {
    const bool packed = i >= first + 2 && (i - first) % 2 == 0;
    const char *want = packed ? "uint8" : "float32";
    const int nd = i < first + 2 ? 1 : 2;
    if (ndims[i] != nd || !dtype_is(dtypes[i], want))
      return set_error(3, std::string(op) + ": param " + std::to_string(i) + " must be " + want + " with " +
                              std::to_string(nd) + " dims");
  }
  norms[0] = (const float *)params[first], norms[1] = (const float *)params[first + 1];
  for (int j = 0; j < 7; ++j) {
    const int64_t *ps = shapes[first + 2 + 2 * j], *ss = shapes[first + 3 + 2 * j];
    if (ss[0] != ps[0])
      return set_error(3, std::string(op) + ": packed and scales rows differ for projection " + std::to_string(j) +
                              " (param " + std::to_string(first + 2 + 2 * j) + ")");
    proj[j] = PackedProj{(const uint8_t *)params[first + 2 + 2 * j], (const float *)params[first + 3 + 2 * j], ps[0],
                         ps[1] * 4, ss[1]};
  }
  return 0;
}

}  // namespace bitcpm

using namespace bitcpm;

namespace {
constexpr int kParams = 26;
}

// MindSpore AOT. Inputs: 0 h f32 [B,H]; 1, 2 attention / FFN RMSNorm weights f32 [H];
// 3..16 (packed u8 [N,K/4], scales f32 [N,G]) of wq, wk, wv, wo, w1 (gate), w3 (up), w2 (down);
// 17, 18 k/v caches [B,KVH,S,D], both f32 or both f16 (a float16 cache stores rounded to nearest even);
// 19 positions i32 [B]; 20, 21 cos/sin f32 [B,D];
// 22 spec f32 [1,8] = (eps_attn, eps_ffn, residual scale, attention scale, heads, act_bits 0|8, A8 eps,
//    write_cache 0|1).
// Outputs: 23 h_out f32 [B,H], 24 k_rot f32 [B,KVH*D], 25 v f32 [B,KVH*D].
BITCPM_API int DecodeLayer(BITCPM_AOT_ARGS) {
  if (int rc = check_count("DecodeLayer", nparam, kParams, "params")) return rc;
  const float *norms[2];
  PackedProj proj[7];
  if (int rc = layer_params("DecodeLayer", params, ndims, shapes, dtypes, 1, norms, proj)) return rc;
  bool half[2];
  for (int c = 0; c < 2; ++c)
    if (int rc = cache_dtype("DecodeLayer", 17 + c, dtypes[17 + c], &half[c])) return rc;
  if (half[0] != half[1]) return set_error(3, "DecodeLayer: the k and v caches must have one dtype");
  for (int i : {0, 17, 18, 19, 20, 21, 22, 23, 24, 25}) {
    const char *want = i == 19 ? "int32" : (i == 17 || i == 18) ? dtypes[i] : "float32";
    const int nd = i == 19 ? 1 : (i == 17 || i == 18) ? 4 : 2;
    if (ndims[i] != nd || !dtype_is(dtypes[i], want))
      return set_error(3, "DecodeLayer: param " + std::to_string(i) + " must be " + want + " with " +
                              std::to_string(nd) + " dims");
  }
  const int64_t B = shapes[0][0], H = shapes[0][1];
  const int64_t KVH = shapes[17][1], S = shapes[17][2], D = shapes[17][3];
  if (shapes[1][0] != H || shapes[2][0] != H || shapes[17][0] != B || shapes[19][0] != B || shapes[20][1] != D ||
      shapes[21][1] != D || shapes[22][1] != 8 || shapes[23][1] != H || shapes[24][1] != KVH * D ||
      shapes[25][1] != KVH * D)
    return set_error(3, "DecodeLayer: inconsistent shapes");
  return decode_layer_impl((const float *)params[0], norms[0], norms[1], proj,
                           KVCacheRef{params[17], params[18], half[0]}, (const int32_t *)params[19],
                           (const float *)params[20],
                           (const float *)params[21], (const float *)params[22], B, H, KVH, S, D, (float *)params[23],
                           (float *)params[24], (float *)params[25]);
}
