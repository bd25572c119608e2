// Exported C functions of libbitcpm_fused_train.so (built with -fvisibility=hidden: only these).
//   Settings (ctypes): bitcpm_fused_set_num_threads / _get_num_threads, bitcpm_fused_set_max_isa /
//     _get_max_isa, bitcpm_fused_isa_name, bitcpm_fused_last_error.
//   MindSpore AOT ops (ops.Custom func_type="aot"; also called through ctypes by the tests):
//     int F(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes, void *stream,
//           void *extra), params = inputs then outputs. Scalar settings come as a small float32
//     "spec" input. Every function checks counts, dtypes and shapes, and returns 0 on success or a
//     nonzero code with a message (bitcpm_fused_last_error, also printed to stderr, since MindSpore
//     only reports the code). Shapes are checked again, by name, in Python before a graph is built.
// The error state and the count / dtype helpers are ops/common/c_abi_util.cpp's.

#include "ft_common.h"

namespace bitcpm {

const char *const kErrorEchoPrefix = "bitcpm fused op error";  // set_error also prints to stderr

namespace ft {

int shape_error(const char *name, const std::string &what) { return set_error(4, std::string(name) + ": " + what); }

namespace {

int64_t numel(const int *ndims, int64_t **shapes, int i) {
  int64_t n = 1;
  for (int d = 0; d < ndims[i]; ++d) n *= shapes[i][d];
  return n;
}

int64_t last_dim(const int *ndims, int64_t **shapes, int i) { return ndims[i] > 0 ? shapes[i][ndims[i] - 1] : 1; }

// Count and dtypes ("f" float32, "i" int32 per param).
int check(const char *name, int nparam, const char **dtypes, const char *kinds) {
  const int expected = (int)std::strlen(kinds);
  if (int rc = check_count(name, nparam, expected, "tensors")) return rc;
  for (int i = 0; i < expected; ++i) {
    const char *want = kinds[i] == 'i' ? "int32" : "float32";
    if (!dtype_is(dtypes[i], want))
      return set_error(3, std::string(name) + ": tensor " + std::to_string(i) + " must be " + want + ", got " +
                              dtype_name(dtypes[i]));
  }
  return 0;
}

// Attention dims from q [B,S,H*D], k [B,S,Hkv*D], cos / sin [Bc, .., S, D] (Bc 1 or B), mask [Bm,1,S,S],
// spec (H, Hkv, scale).
int attn_dims(const char *name, int *ndims, int64_t **shapes, void **params, AttnDims &dm) {
  const float *spec = (const float *)params[6];
  if (numel(ndims, shapes, 6) < 3) return shape_error(name, "spec must hold (num_heads, n_kv_heads, scale)");
  if (ndims[0] != 3 || ndims[1] != 3 || ndims[2] != 3)
    return shape_error(name, "q, k, v must be 3-D [batch, seq, heads*head_dim]");
  dm.B = shapes[0][0];
  dm.S = shapes[0][1];
  dm.H = (int64_t)spec[0];
  dm.Hkv = (int64_t)spec[1];
  dm.scale = spec[2];
  if (dm.H <= 0 || dm.Hkv <= 0 || dm.H % dm.Hkv != 0 || shapes[0][2] % dm.H != 0)
    return shape_error(name, "num_heads must divide q's width and be a multiple of n_kv_heads");
  dm.D = shapes[0][2] / dm.H;
  if (dm.D % 2 != 0) return shape_error(name, "head_dim must be even (rotary embedding)");
  for (int i = 1; i <= 2; ++i)
    if (shapes[i][0] != dm.B || shapes[i][1] != dm.S || shapes[i][2] != dm.Hkv * dm.D)
      return shape_error(name, "k and v must be [batch, seq, n_kv_heads*head_dim]");
  const int64_t cn = numel(ndims, shapes, 3);
  if ((cn != dm.S * dm.D && cn != dm.B * dm.S * dm.D) || numel(ndims, shapes, 4) != cn ||
      last_dim(ndims, shapes, 3) != dm.D || last_dim(ndims, shapes, 4) != dm.D)
    return shape_error(name, "cos and sin must hold [batch or 1, seq, head_dim] values");
  dm.Bc = cn / (dm.S * dm.D);
  const int64_t mn = numel(ndims, shapes, 5);
  if (mn != dm.S * dm.S && mn != dm.B * dm.S * dm.S)
    return shape_error(name, "mask must be [batch or 1, 1, seq, seq]");
  dm.Bm = mn / (dm.S * dm.S);
  return 0;
}

}  // namespace
}  // namespace ft
}  // namespace bitcpm

using namespace bitcpm;
using namespace bitcpm::ft;

#define F32(i) ((float *)params[i])
#define CF32(i) ((const float *)params[i])

// ---------------------------------------------------------------- settings
BITCPM_API int bitcpm_fused_set_num_threads(int n) {
  g_num_threads.store(n > 0 ? n : 0);
  return resolve_threads(0);
}
BITCPM_API int bitcpm_fused_get_num_threads() { return resolve_threads(0); }
// 0 best available, 1 at most AVX2 + FMA, 2 portable.
BITCPM_API int bitcpm_fused_set_max_isa(int level) {
  ft::g_max_isa.store(level == ft::kIsaAvx2 || level == ft::kIsaPortable ? level : ft::kIsaBest);
  return 0;
}
BITCPM_API int bitcpm_fused_get_max_isa() { return ft::g_max_isa.load(); }
BITCPM_API const char *bitcpm_fused_isa_name() { return table().name; }
BITCPM_API const char *bitcpm_fused_last_error() { return last_error(); }

// ---------------------------------------------------------------- cross-entropy
// logits f32 [N, V], labels i32 [N] -> loss f32 [N], lse f32 [N].
BITCPM_API int FusedCrossEntropyFwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedCrossEntropyFwd";
  if (int rc = check(name, nparam, dtypes, "fiff")) return rc;
  if (ndims[0] != 2) return shape_error(name, "logits must be 2-D [tokens, vocab]");
  const int64_t N = shapes[0][0], V = shapes[0][1];
  for (int i = 1; i < 4; ++i)
    if (numel(ndims, shapes, i) != N) return shape_error(name, "labels, loss and lse must hold one value per token");
  table().ce_forward(CF32(0), (const int32_t *)params[1], N, V, F32(2), F32(3), resolve_threads(0));
  return 0;
}

// logits, labels, lse [N], dloss [N], dlse [N] -> dlogits [N, V].
BITCPM_API int FusedCrossEntropyBwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedCrossEntropyBwd";
  if (int rc = check(name, nparam, dtypes, "fifff" "f")) return rc;
  if (ndims[0] != 2 || numel(ndims, shapes, 5) != numel(ndims, shapes, 0))
    return shape_error(name, "logits and dlogits must be [tokens, vocab]");
  const int64_t N = shapes[0][0], V = shapes[0][1];
  for (int i = 1; i < 5; ++i)
    if (numel(ndims, shapes, i) != N) return shape_error(name, "labels, lse, dloss, dlse: one value per token");
  table().ce_backward(CF32(0), (const int32_t *)params[1], CF32(2), CF32(3), CF32(4), N, V, F32(5), resolve_threads(0));
  return 0;
}

// ---------------------------------------------------------------- distillation (CE + KL)
// s f32 [N, V] (student logits), t f32 [N, V] (teacher logits), labels i32 [N], spec [1] = (1 / T)
// -> ce f32 [N], kl f32 [N], stats f32 [N, 3] (for the backward).
BITCPM_API int FusedDistillFwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedDistillFwd";
  if (int rc = check(name, nparam, dtypes, "ffifff" "f")) return rc;
  if (ndims[0] != 2 || ndims[1] != 2 || shapes[1][0] != shapes[0][0] || shapes[1][1] != shapes[0][1])
    return shape_error(name, "student and teacher logits must both be [tokens, vocab]");
  const int64_t N = shapes[0][0], V = shapes[0][1];
  if (numel(ndims, shapes, 3) < 1 || !(CF32(3)[0] > 0.0f)) return shape_error(name, "spec must hold 1 / T > 0");
  if (numel(ndims, shapes, 2) != N || numel(ndims, shapes, 4) != N || numel(ndims, shapes, 5) != N ||
      numel(ndims, shapes, 6) != 3 * N)
    return shape_error(name, "labels, ce and kl must hold one value per token, stats three");
  table().distill_forward(CF32(0), CF32(1), (const int32_t *)params[2], N, V, CF32(3)[0], F32(4), F32(5), F32(6),
                          resolve_threads(0));
  return 0;
}

// s, t, labels, spec, stats [N, 3], dce [N], dkl [N] -> ds f32 [N, V].
BITCPM_API int FusedDistillBwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedDistillBwd";
  if (int rc = check(name, nparam, dtypes, "ffifffff")) return rc;
  if (ndims[0] != 2 || numel(ndims, shapes, 1) != numel(ndims, shapes, 0) ||
      numel(ndims, shapes, 7) != numel(ndims, shapes, 0))
    return shape_error(name, "student logits, teacher logits and ds must be [tokens, vocab]");
  const int64_t N = shapes[0][0], V = shapes[0][1];
  if (numel(ndims, shapes, 3) < 1 || !(CF32(3)[0] > 0.0f)) return shape_error(name, "spec must hold 1 / T > 0");
  if (numel(ndims, shapes, 2) != N || numel(ndims, shapes, 4) != 3 * N || numel(ndims, shapes, 5) != N ||
      numel(ndims, shapes, 6) != N)
    return shape_error(name, "labels, dce and dkl must hold one value per token, stats three");
  table().distill_backward(CF32(0), CF32(1), (const int32_t *)params[2], CF32(4), CF32(5), CF32(6), N, V, CF32(3)[0],
                           F32(7), resolve_threads(0));
  return 0;
}

// ---------------------------------------------------------------- RMSNorm
// x [..., D], w [D], spec [1] = (eps) -> y [..., D], rstd [N] (N = numel(x) / D).
BITCPM_API int FusedRmsNormFwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedRmsNormFwd";
  if (int rc = check(name, nparam, dtypes, "fffff")) return rc;
  const int64_t D = last_dim(ndims, shapes, 0), n = numel(ndims, shapes, 0);
  if (D <= 0 || numel(ndims, shapes, 1) != D || numel(ndims, shapes, 3) != n || numel(ndims, shapes, 4) * D != n)
    return shape_error(name, "x [..., D], weight [D], y like x, rstd one value per row");
  table().rmsnorm_forward(CF32(0), CF32(1), n / D, D, CF32(2)[0], F32(3), F32(4), resolve_threads(0));
  return 0;
}

// x, w, rstd, dy -> dx, dw.
BITCPM_API int FusedRmsNormBwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedRmsNormBwd";
  if (int rc = check(name, nparam, dtypes, "ffffff")) return rc;
  const int64_t D = last_dim(ndims, shapes, 0), n = numel(ndims, shapes, 0);
  if (D <= 0 || numel(ndims, shapes, 1) != D || numel(ndims, shapes, 2) * D != n || numel(ndims, shapes, 3) != n ||
      numel(ndims, shapes, 4) != n || numel(ndims, shapes, 5) != D)
    return shape_error(name, "x [..., D], weight [D], rstd per row, dy and dx like x, dw [D]");
  table().rmsnorm_backward(CF32(0), CF32(1), CF32(2), CF32(3), n / D, D, F32(4), F32(5), resolve_threads(0));
  return 0;
}

// ---------------------------------------------------------------- SwiGLU
// g, u -> h = silu(g) * u (any equal shapes).
BITCPM_API int FusedSwigluFwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedSwigluFwd";
  if (int rc = check(name, nparam, dtypes, "fff")) return rc;
  const int64_t n = numel(ndims, shapes, 0);
  if (numel(ndims, shapes, 1) != n || numel(ndims, shapes, 2) != n) return shape_error(name, "g, u, h differ in size");
  table().swiglu_forward(CF32(0), CF32(1), n, F32(2), resolve_threads(0));
  return 0;
}

// g, u, dh -> dg, du.
BITCPM_API int FusedSwigluBwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedSwigluBwd";
  if (int rc = check(name, nparam, dtypes, "fffff")) return rc;
  const int64_t n = numel(ndims, shapes, 0);
  for (int i = 1; i < 5; ++i)
    if (numel(ndims, shapes, i) != n) return shape_error(name, "g, u, dh, dg, du differ in size");
  table().swiglu_backward(CF32(0), CF32(1), CF32(2), n, F32(3), F32(4), resolve_threads(0));
  return 0;
}

// ---------------------------------------------------------------- attention
// q [B,S,H*D], k [B,S,Hkv*D], v, cos [Bc,S,D], sin [Bc,S,D], mask [Bm,1,S,S], spec (H, Hkv, scale)
//   -> out [B,S,H*D], stats [B,H,S,2].
BITCPM_API int FusedAttentionFwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedAttentionFwd";
  if (int rc = check(name, nparam, dtypes, "fffffffff")) return rc;
  AttnDims dm;
  if (int rc = attn_dims(name, ndims, shapes, params, dm)) return rc;
  if (numel(ndims, shapes, 7) != numel(ndims, shapes, 0) || numel(ndims, shapes, 8) != dm.B * dm.H * dm.S * 2)
    return shape_error(name, "out must be like q and stats [batch, heads, seq, 2]");
  table().attention_forward(CF32(0), CF32(1), CF32(2), CF32(3), CF32(4), CF32(5), dm, F32(7), F32(8), resolve_threads(0));
  return 0;
}

// q, k, v, cos, sin, mask, spec, out, stats, dout -> dq, dk, dv.
BITCPM_API int FusedAttentionBwd(BITCPM_AOT_ARGS) {
  const char *name = "FusedAttentionBwd";
  if (int rc = check(name, nparam, dtypes, "fffffffffffff")) return rc;
  AttnDims dm;
  if (int rc = attn_dims(name, ndims, shapes, params, dm)) return rc;
  const int64_t nq = numel(ndims, shapes, 0), nk = numel(ndims, shapes, 1);
  if (numel(ndims, shapes, 7) != nq || numel(ndims, shapes, 8) != dm.B * dm.H * dm.S * 2 ||
      numel(ndims, shapes, 9) != nq || numel(ndims, shapes, 10) != nq || numel(ndims, shapes, 11) != nk ||
      numel(ndims, shapes, 12) != nk)
    return shape_error(name, "out, dout, dq like q; stats [batch, heads, seq, 2]; dk, dv like k");
  table().attention_backward(CF32(0), CF32(1), CF32(2), CF32(3), CF32(4), CF32(5), dm, CF32(7), CF32(8), CF32(9),
                             F32(10), F32(11), F32(12), resolve_threads(0));
  return 0;
}

// ---------------------------------------------------------------- optimizer and gradient norm
// p, g, m, v (same size), lr [1], weight decay [1], step i32 [1], hyper [3] = (beta1, beta2, eps),
// grad scale [1] (the clip factor, applied to g inside the update: no separate pass over the gradients)
//   -> p', m', v' (MindFormers' AdamW update; the optimizer assigns them to its parameters).
BITCPM_API int FusedAdamW(BITCPM_AOT_ARGS) {
  const char *name = "FusedAdamW";
  if (int rc = check(name, nparam, dtypes, "ffffffifffff")) return rc;
  const int64_t n = numel(ndims, shapes, 0);
  for (int i : {1, 2, 3, 9, 10, 11})
    if (numel(ndims, shapes, i) != n) return shape_error(name, "param, grad, m, v and the outputs differ in size");
  if (numel(ndims, shapes, 4) != 1 || numel(ndims, shapes, 5) != 1 || numel(ndims, shapes, 6) != 1 ||
      numel(ndims, shapes, 7) != 3 || numel(ndims, shapes, 8) != 1)
    return shape_error(name, "lr, weight decay, step and grad scale are scalars; hyper is (beta1, beta2, eps)");
  const float *hyper = CF32(7);
  table().adamw_update(CF32(0), CF32(1), CF32(2), CF32(3), n, CF32(4)[0], CF32(5)[0], hyper[0], hyper[1], hyper[2],
                       (float)((const int32_t *)params[6])[0], CF32(8)[0], F32(9), F32(10), F32(11),
                       resolve_threads(0));
  return 0;
}

// x (any shape) -> [1] = sum(x * x).
BITCPM_API int SumSquares(BITCPM_AOT_ARGS) {
  const char *name = "SumSquares";
  if (int rc = check(name, nparam, dtypes, "ff")) return rc;
  if (numel(ndims, shapes, 1) != 1) return shape_error(name, "the output is one value");
  table().sum_squares(CF32(0), numel(ndims, shapes, 0), F32(1), resolve_threads(0));
  return 0;
}
