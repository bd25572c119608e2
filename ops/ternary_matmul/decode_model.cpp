// DecodeModel: `steps` greedy decode steps of a whole packed ternary MiniCPM/LLaMA model in one AOT op
// (bitcpm_ms/inference/fused_model.py). Reference: decode_model_reference in
// bitcpm_ms/kernels/decode_model.py.
//
// Why: the multi-step decode graph of one DecodeLayer op per layer still launches ~L + 6 MindSpore ops
// per token (embedding, scale, cos/sin gathers, the layers, final norm, head, argmax). Each costs tens
// of microseconds in MindSpore's CPU runtime, which on the ~100M model was more than a third of a token
// and on the tiny model most of it (docs/generation.md, "Speed"). Here a graph call is one op: the
// per-call cost is paid once per `steps` tokens and nothing is paid per token.
//
// Each step j (row b at position p_j = min(positions[b] + j, S - 1), the multi-step graph's rule):
//   h   = embedding[id_b] * scale_emb                        (MiniCPM's ScaleOutput; 1 for LLaMA)
//   h   = DecodeLayer_l(h, ..., cos[p_j], sin[p_j]) for l = 0..L-1, with write_cache set: each layer
//         stores its new key/value into slot p_j of its caches (attention reads slots < p_j only)
//   x   = rmsnorm(h, w_norm, eps) * logit_scale                 (MiniCPM's scaled final norm)
//   id_b = argmax_v (x @ W_head^T)[v]                           (first index of the maximum)
// The arithmetic is the layer op's (decode_layer_impl) and the head op's (FloatMatmulNT), so the
// tokens and caches equal those of the per-layer multi-step graph up to the final norm's summation
// order. The caches are host-owned numpy memory that MindSpore passes by pointer (cache.py).

#include <string>
#include <vector>

#include "ternary_common.h"

using namespace bitcpm;

namespace bitcpm {

int model_logits(const ModelArgs &a, const float *h, int64_t B, float *x, float *logits) {
  rmsnorm_rows(h, a.norm, a.model_spec[1], B, a.H, x);
  const float logit_scale = a.model_spec[2];
  for (int64_t i = 0; i < B * a.H; ++i) x[i] = x[i] * logit_scale;
  return a.half_head ? half_matmul_nt_impl(x, (const uint16_t *)a.head, logits, B, a.H, a.V, 0)
                     : float_matmul_nt_impl(x, (const float *)a.head, logits, B, a.H, a.V, 0);
}

int model_args(const char *op, int nparam, void **params, const int *ndims, int64_t *const *shapes,
               const char *const *dtypes, ModelArgs *out) {
  const std::string name(op);
  if (nparam < kModelFixed + 19 || (nparam - kModelFixed - 1) % 18 != 0)
    return set_error(3, name + ": expected 10 + 18 L params (L >= 1 layers), got " + std::to_string(nparam));
  ModelArgs &a = *out;
  a.L = (nparam - kModelFixed - 1) / 18;
  const int first_cache = kModelFixed + 16 * (int)a.L;
  a.half_head = dtype_is(dtypes[7], "float16");
  for (int i : {0, 1, 2, 3, 4, 5, 6, 7, 8}) {
    const char *want = (i == 0 || i == 1) ? "int32" : (i == 7 && a.half_head) ? "float16" : "float32";
    const int nd = (i == 1 || i == 6) ? 1 : 2;
    if (ndims[i] != nd || !dtype_is(dtypes[i], want))
      return set_error(3, name + ": param " + std::to_string(i) + " must be " + want + " with " + std::to_string(nd) +
                              " dims" + (i == 7 ? " (float32 or float16)" : ""));
  }
  a.B = shapes[0][0], a.V = shapes[3][0], a.H = shapes[3][1], a.P = shapes[4][0], a.D = shapes[4][1];
  if (shapes[1][0] != a.B || shapes[2][1] != 8 || shapes[5][0] != a.P || shapes[5][1] != a.D || shapes[6][0] != a.H ||
      shapes[7][0] != a.V || shapes[7][1] != a.H || shapes[8][0] != a.L || shapes[8][1] != 8)
    return set_error(3, name + ": inconsistent shapes (ids [B,*], positions or lengths [B], embedding and head [V,H], "
                               "rotary tables [P,D], layer specs [L,8])");
  for (int64_t l = 0; l < a.L; ++l)
    if (((const float *)params[8])[8 * l + 7] == 0.0f)
      return set_error(3, name + ": layer spec row " + std::to_string(l) + " must have write_cache set (a later "
                                 "token reads an earlier one's keys from the cache)");
  a.norms.resize(2 * a.L), a.proj.resize(7 * a.L), a.caches.resize(2 * a.L);
  for (int64_t l = 0; l < a.L; ++l) {
    if (int rc = layer_params(op, params, ndims, shapes, dtypes, kModelFixed + 16 * (int)l, &a.norms[2 * l],
                              &a.proj[7 * l]))
      return rc;
    for (int c = 0; c < 2; ++c) {
      const int i = first_cache + 2 * (int)l + c;
      bool half;
      if (int rc = cache_dtype(op, i, dtypes[i], &half)) return rc;
      if (ndims[i] != 4) return set_error(3, name + ": param " + std::to_string(i) + " must have 4 dims (a cache)");
      if (l == 0 && c == 0) a.KVH = shapes[i][1], a.S = shapes[i][2], a.half_cache = half;
      if (half != a.half_cache)
        return set_error(3, name + ": cache param " + std::to_string(i) + " is " + dtypes[i] +
                                ", not the first cache's dtype (every cache float32 or every one float16)");
      if (shapes[i][0] != a.B || shapes[i][1] != a.KVH || shapes[i][2] != a.S || shapes[i][3] != a.D)
        return set_error(3, name + ": cache param " + std::to_string(i) + " is not [B,KVH,S,D] like the first");
      a.caches[2 * l + c] = params[i];
    }
  }
  a.ids = (const int32_t *)params[0], a.pos = (const int32_t *)params[1];
  a.model_spec = (const float *)params[2], a.embedding = (const float *)params[3];
  a.cos = (const float *)params[4], a.sin = (const float *)params[5], a.norm = (const float *)params[6];
  a.head = params[7], a.layer_specs = (const float *)params[8];
  return 0;
}

}  // namespace bitcpm

namespace {

int run_model(const ModelArgs &a, int32_t *tokens) {
  SpinSession spin;  // ~5 parallel regions per layer and token: workers poll between them
  const float scale_emb = a.model_spec[0];
  const int64_t B = a.B, H = a.H, D = a.D, KVH = a.KVH;
  std::vector<float> h(B * H), h_next(B * H), k_rot(B * KVH * D), v(B * KVH * D), cos(B * D), sin(B * D),
      logits(B * a.V);
  std::vector<int32_t> ids(a.ids, a.ids + B), pos(B);
  for (int64_t j = 0; j < a.steps; ++j) {
    for (int64_t b = 0; b < B; ++b) {
      if (ids[b] < 0 || ids[b] >= a.V)
        return set_error(3, "DecodeModel: token id " + std::to_string(ids[b]) + " of row " + std::to_string(b) +
                                " outside the vocabulary (0.." + std::to_string(a.V - 1) + ")");
      const int64_t p = std::min<int64_t>(int64_t(a.pos[b]) + j, a.S - 1);
      if (a.pos[b] < 0 || p >= a.P)
        return set_error(3, "DecodeModel: position " + std::to_string(a.pos[b] + j) + " of row " +
                                std::to_string(b) + " outside the rotary tables (0.." + std::to_string(a.P - 1) + ")");
      pos[b] = (int32_t)p;
      const float *e = a.embedding + int64_t(ids[b]) * H;
      for (int64_t i = 0; i < H; ++i) h[b * H + i] = e[i] * scale_emb;
      std::copy(a.cos + p * D, a.cos + (p + 1) * D, cos.begin() + b * D);
      std::copy(a.sin + p * D, a.sin + (p + 1) * D, sin.begin() + b * D);
    }
    for (int64_t l = 0; l < a.L; ++l) {
      const KVCacheRef cache{a.caches[2 * l], a.caches[2 * l + 1], a.half_cache};
      int rc = decode_layer_impl(h.data(), a.norms[2 * l], a.norms[2 * l + 1], &a.proj[7 * l], cache, pos.data(),
                                 cos.data(), sin.data(), a.layer_specs + 8 * l, B, H, KVH, a.S, D, h_next.data(),
                                 k_rot.data(), v.data());
      if (rc) return rc;
      h.swap(h_next);
    }
    if (int rc = model_logits(a, h.data(), B, h_next.data(), logits.data())) return rc;
    for (int64_t b = 0; b < B; ++b) {
      const float *row = logits.data() + b * a.V;
      int64_t best = 0;
      for (int64_t t = 1; t < a.V; ++t)
        if (row[t] > row[best]) best = t;
      ids[b] = (int32_t)best;
      tokens[b * a.steps + j] = (int32_t)best;
    }
  }
  return 0;
}

}  // namespace

// MindSpore AOT. Inputs:
//   0 input_ids i32 [B,1]; 1 positions i32 [B]; 2 model spec f32 [1,8] = (scale_emb, final-norm eps,
//   logit_scale, steps, 0, 0, 0, 0); 3 embedding f32 [V,H]; 4, 5 cos / sin tables f32 [P,D]; 6 final norm
//   weight f32 [H]; 7 head weight f32 or f16 [V,H]; 8 layer specs f32 [L,8] (layer_spec rows, write_cache
//   set); then per layer l, from 9 + 16 l: the 16 inputs of DecodeLayer's 1..16 (two norm weights, seven
//   (packed, scales)); then per layer, from 9 + 16 L + 2 l: k / v caches [B,KVH,S,D], every one f32 or every one f16.
// Output: tokens i32 [B, steps].
BITCPM_API int DecodeModel(BITCPM_AOT_ARGS) {
  ModelArgs a;
  if (int rc = model_args("DecodeModel", nparam, params, ndims, shapes, dtypes, &a)) return rc;
  const int out = nparam - 1;
  if (ndims[out] != 2 || !dtype_is(dtypes[out], "int32"))
    return set_error(3, "DecodeModel: param " + std::to_string(out) + " (the tokens) must be int32 with 2 dims");
  a.steps = shapes[out][1];
  if (shapes[0][1] != 1 || shapes[out][0] != a.B || a.steps < 1 || (int64_t)a.model_spec[3] != a.steps)
    return set_error(3, "DecodeModel: inconsistent shapes (ids [B,1], tokens [B,steps], steps in the model spec)");
  return run_model(a, (int32_t *)params[out]);
}
