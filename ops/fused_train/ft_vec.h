// Float vectors of the instruction set's native width (GCC vector extensions; FT_VBYTES is set by
// isa_*.cpp: 64 = zmm on AVX-512, 32 = ymm on AVX2, 16 = xmm on the baseline; a vector wider than
// the registers would be lowered lane by lane) and the few math functions the kernels need.
// Included inside the `#pragma GCC target` region of each isa_*.cpp, so every function here is
// compiled once per instruction set. Paths differ in the last bits: reduction tree width and FMA
// contraction.

typedef float vf __attribute__((vector_size(FT_VBYTES)));
typedef int32_t vi __attribute__((vector_size(FT_VBYTES)));
constexpr int kW = FT_VBYTES / 4;

static inline vf vload(const float *p) {
  vf v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
static inline void vstore(float *p, vf v) { __builtin_memcpy(p, &v, sizeof v); }
static inline vf vset(float x) { return vf{} + x; }
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
static inline vf vmin(vf a, vf b) { return a < b ? a : b; }

// Tail handling: lanes [0, n) from p, the rest `fill`.
static inline vf vload_part(const float *p, int64_t n, float fill) {
  float t[kW];
  for (int l = 0; l < kW; ++l) t[l] = l < n ? p[l] : fill;
  return vload(t);
}
static inline void vstore_part(float *p, vf v, int64_t n) {
  for (int l = 0; l < n; ++l) p[l] = v[l];
}

// Fixed-order horizontal reductions (a pairwise tree, the same on every path).
static inline float hsum(vf v) {
  float t[kW];
  vstore(t, v);
  for (int w = kW / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  return t[0];
}
static inline float hmax(vf v) {
  float t[kW];
  vstore(t, v);
  for (int w = kW / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) t[l] = t[l] > t[l + w] ? t[l] : t[l + w];
  return t[0];
}

// exp(x), Cephes expf polynomial (about 1 ulp on [-87.3, 88]); 0 below -87.33 (flushing what would
// be a float32 subnormal result), +inf above 88.72. NaN propagates.
static inline vf vexp(vf x) {
  const vf lo = vset(-87.336544750553f), hi = vset(88.0f);
  vf xc = vmin(vmax(x, lo), hi);
  vf fx = xc * 1.44269504088896341f + 0.5f;
  vi ti = __builtin_convertvector(fx, vi);  // truncates toward zero
  vf tf = __builtin_convertvector(ti, vf);
  tf = tf > fx ? tf - 1.0f : tf;            // floor
  vf r = xc - tf * 0.693359375f;
  r = r - tf * -2.12194440e-4f;
  vf z = r * r;
  vf y = ((((1.9875691500E-4f * r + 1.3981999507E-3f) * r + 8.3334519073E-3f) * r + 4.1665795894E-2f) * r +
          1.6666665459E-1f) * r + 5.0000001201E-1f;
  y = y * z + r + 1.0f;
  vi n = __builtin_convertvector(tf, vi);
  vf pow2n = (vf)((n + 127) << 23);
  vf out = y * pow2n;
  out = x < lo ? vf{} : out;
  out = x > 88.72283905f ? vset(std::numeric_limits<float>::infinity()) : out;
  out = x != x ? x : out;
  return out;
}

static inline vf vsqrt(vf x) {
  vf r;
  for (int l = 0; l < kW; ++l) r[l] = __builtin_sqrtf(x[l]);  // one vsqrtps per vector
  return r;
}

static inline float sexp(float x) { return vexp(vset(x))[0]; }

// sigmoid(x) = 1 / (1 + exp(-x)), with exp's argument clamped so that 1 + exp(-x) stays finite.
static inline vf vsigmoid(vf x) {
  vf e = vexp(vmin(vmax(-x, vset(-87.0f)), vset(87.0f)));
  return 1.0f / (1.0f + e);
}
