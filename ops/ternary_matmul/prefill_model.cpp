// PrefillModel: the prompt pass of a whole packed ternary MiniCPM/LLaMA model as one AOT op
// (bitcpm_ms/inference/fused_model.py). Reference: prefill_model_reference in
// bitcpm_ms/kernels/prefill_model.py.
//
// Why: the MindSpore prefill graph launches ~30 ops per layer, copies every layer's keys and values out
// as a [L, B, KVH, P, D] stack that the host then writes into the cache, and at 2 threads MindSpore's
// own worker threads spin beside the kernels' (docs/generation.md, "Speed"). Here the prompt pass is one
// op that writes the cache itself, and right padding costs nothing: only the valid tokens of the rows
// run (a packed variable-length batch of T = sum(lengths) tokens), through one [T, H] GEMM per shared
// projection set.
//
// Row b has lengths[b] tokens (1 <= lengths[b] <= min(prompt columns, cache slots, rotary positions));
// token t of row b sits at position t:
//   h = embedding[ids[b, t]] * scale_emb                                  (MiniCPM's ScaleOutput)
//   h = DecodeLayer_l(h, ...) for l = 0..L-1 over the T tokens at once, each token at position t of
//       cache row b with write_cache: every token stores its key and value into slot t first, then
//       attends to slots < t and to itself; the arithmetic of decoding the prompt one token at a time
//   logits[b] = head(rmsnorm(h of row b's last token) * logit_scale)       (as DecodeModel's)
// Slots >= lengths[b] are left as they were: decoding writes slot p before any step reads it.

#include <string>
#include <vector>

#include "ternary_common.h"

using namespace bitcpm;

namespace {

int run_prefill(const ModelArgs &a, int64_t columns, float *logits) {
  SpinSession spin;  // ~5 parallel regions per layer: workers poll between them
  const int64_t B = a.B, H = a.H, D = a.D, KVH = a.KVH;
  const int64_t longest = std::min(std::min(columns, a.S), a.P);
  std::vector<int64_t> first(B + 1, 0);  // row b's tokens are first[b] .. first[b + 1] - 1
  for (int64_t b = 0; b < B; ++b) {
    const int64_t n = a.pos[b];
    if (n < 1 || n > longest)
      return set_error(3, "PrefillModel: length " + std::to_string(n) + " of row " + std::to_string(b) +
                              " outside 1.." + std::to_string(longest) + " (prompt columns " +
                              std::to_string(columns) + ", cache slots " + std::to_string(a.S) +
                              ", rotary positions " + std::to_string(a.P) + ")");
    first[b + 1] = first[b] + n;
  }
  const int64_t T = first[B];
  std::vector<float> h(T * H), h_next(T * H), k_rot(T * KVH * D), v(T * KVH * D), cos(T * D), sin(T * D);
  std::vector<int32_t> pos(T), rows(T);
  const float scale_emb = a.model_spec[0];
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < first[b + 1] - first[b]; ++t) {
      const int64_t id = a.ids[b * columns + t], row = first[b] + t;
      if (id < 0 || id >= a.V)
        return set_error(3, "PrefillModel: token id " + std::to_string(id) + " at row " + std::to_string(b) +
                                ", column " + std::to_string(t) + " outside the vocabulary (0.." +
                                std::to_string(a.V - 1) + ")");
      const float *e = a.embedding + id * H;
      for (int64_t i = 0; i < H; ++i) h[row * H + i] = e[i] * scale_emb;
      std::copy(a.cos + t * D, a.cos + (t + 1) * D, cos.begin() + row * D);
      std::copy(a.sin + t * D, a.sin + (t + 1) * D, sin.begin() + row * D);
      pos[row] = (int32_t)t, rows[row] = (int32_t)b;
    }
  for (int64_t l = 0; l < a.L; ++l) {
    const KVCacheRef cache{a.caches[2 * l], a.caches[2 * l + 1], a.half_cache};
    int rc = decode_layer_impl(h.data(), a.norms[2 * l], a.norms[2 * l + 1], &a.proj[7 * l], cache, pos.data(),
                               cos.data(), sin.data(), a.layer_specs + 8 * l, T, H, KVH, a.S, D, h_next.data(),
                               k_rot.data(), v.data(), rows.data());
    if (rc) return rc;
    h.swap(h_next);
  }
  std::vector<float> last(B * H), scratch(B * H);  // each row's last token
  for (int64_t b = 0; b < B; ++b)
    std::copy(h.begin() + (first[b + 1] - 1) * H, h.begin() + first[b + 1] * H, last.begin() + b * H);
  return model_logits(a, last.data(), B, scratch.data(), logits);
}

}  // namespace

// MindSpore AOT. Inputs as DecodeModel's (ternary_common.h, ModelArgs), except: 0 input_ids i32 [B,C]
// (right-padded prompts), 1 lengths i32 [B] (valid tokens per row). Output: logits f32 [B,V] at each
// row's last prompt token. The caches are written in place.
BITCPM_API int PrefillModel(BITCPM_AOT_ARGS) {
  ModelArgs a;
  if (int rc = model_args("PrefillModel", nparam, params, ndims, shapes, dtypes, &a)) return rc;
  const int out = nparam - 1;
  if (ndims[out] != 2 || !dtype_is(dtypes[out], "float32") || shapes[out][0] != a.B || shapes[out][1] != a.V)
    return set_error(3, "PrefillModel: param " + std::to_string(out) + " (the logits) must be float32 [B,V]");
  return run_prefill(a, shapes[0][1], (float *)params[out]);
}
