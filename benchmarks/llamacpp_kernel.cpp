// One M = 1 GEMV, ours (bitcpm_ternary_matmul through dlopen) against llama.cpp's TQ2_0 matmul (ggml
// mul_mat of a TQ2_0 weight by a float32 vector: ggml quantizes the vector to Q8_K and runs the TQ2_0
// vec-dot), in one process, rounds interleaved and, inside a round, blocks of 10 calls of each side. Driven by benchmarks/kernel_compare.py, which builds it
// next to the cached llama.cpp build (benchmarks/llamacpp.py).
//
//   bitcpm-kernel-bench LIB K N G THREADS ISA ROUNDS REPS
//     LIB: our libbitcpm path; ISA: 0 best, 1 AVX2 cap (ours only: ggml runs what it was built for).
// Prints one JSON object: per round, the median seconds per call of each side
// ({"ours_a8": [...], "ours_w": [...], "tq2_0": [...], "fma_bound": [...]}). fma_bound is not a kernel: it
// is the least time any float32-activation AVX2 GEMV of this shape could take here (fma_share below),
// the bound the weight-only target is measured against.
#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include <immintrin.h>

#include "ggml-cpu.h"
#include "ggml.h"

typedef int (*matmul_fn)(const float *, const uint8_t *, const float *, float *, int64_t, int64_t, int64_t, int64_t,
                         int, float, int, int);
typedef int (*pack_fn)(const float *, int64_t, int64_t, int64_t, float, uint8_t *, float *, int);
typedef int (*isa_fn)(int);

static double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Appends the seconds of n calls of f to t, after two untimed calls: the other side's threads may still
// be winding down (ggml's poll, our spin session) when a block starts.
template <class F>
static void time_calls(F f, int n, std::vector<double> &t) {
  f(), f();
  for (int i = 0; i < n; ++i) {
    double a = now();
    f();
    t.push_back(now() - a);
  }
}

// n8 8-lane fused multiply-adds at the core's peak: 12 independent accumulators in registers (with the two
// operands, 14 of the 16 ymm registers: more would spill), no memory
// access. With n8 = N K / (8 threads) this is what one core would spend on its share of a float32-activation
// GEMV whose weights were decoded for free and split perfectly over the threads: no such kernel is faster.
// (The empty asm makes the function impure, so the compiler cannot hoist a call out of the timing loop.)
__attribute__((target("avx2,fma"), noinline)) static float fma_share(int64_t n8) {
  __asm__ volatile("" ::: "memory");
  __m256 acc[12];
#pragma GCC unroll 12
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(0.001f * (float)j);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(0.001f);
  for (int64_t i = 0; i < n8; i += 12) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], a, b);
  }
  __m256 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm256_add_ps(s, acc[j]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}

static double median(std::vector<double> t) {
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

static void print_list(const char *name, const std::vector<double> &v, bool last) {
  std::printf("\"%s\": [", name);
  for (size_t i = 0; i < v.size(); ++i) std::printf("%s%.9g", i ? ", " : "", v[i]);
  std::printf("]%s", last ? "" : ", ");
}

int main(int argc, char **argv) {
  if (argc != 9) {
    std::fprintf(stderr, "usage: %s LIB K N G THREADS ISA ROUNDS REPS\n", argv[0]);
    return 2;
  }
  const int64_t K = std::atoll(argv[2]), N = std::atoll(argv[3]), G = std::atoll(argv[4]);
  const int threads = std::atoi(argv[5]), isa = std::atoi(argv[6]), rounds = std::atoi(argv[7]),
            reps = std::atoi(argv[8]);
  void *lib = dlopen(argv[1], RTLD_NOW);
  if (!lib) {
    std::fprintf(stderr, "dlopen: %s\n", dlerror());
    return 1;
  }
  auto mm = (matmul_fn)dlsym(lib, "bitcpm_ternary_matmul");
  auto pack = (pack_fn)dlsym(lib, "bitcpm_quantize_pack");
  auto set_isa = (isa_fn)dlsym(lib, "bitcpm_set_max_isa");
  auto spin_session = (isa_fn)dlsym(lib, "bitcpm_spin_session");
  if (!mm || !pack || !set_isa || !spin_session) return 1;
  set_isa(isa);

  // Ternary weights with one scale per 256-input group: exact in both formats.
  std::mt19937 rng(0);
  std::vector<float> w(N * K), x(K);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t gi = 0; gi < K / 256; ++gi) {
      const float s = 0.01f + 0.09f * (rng() % 1000) / 1000.0f;
      for (int64_t k = gi * 256; k < gi * 256 + 256; ++k) w[n * K + k] = s * (float)((int)(rng() % 3) - 1);
    }
  std::normal_distribution<float> nd;
  for (auto &v : x) v = nd(rng);
  std::vector<uint8_t> packed(N * K / 4);
  std::vector<float> scales(N * G), y(N);
  if (pack(w.data(), N, K, G, 1e-5f, packed.data(), scales.data(), threads)) return 1;

  ggml_init_params ip = {(size_t)(N * K) + ((size_t)64 << 20), nullptr, false};
  ggml_context *ctx = ggml_init(ip);
  ggml_tensor *W = ggml_new_tensor_2d(ctx, GGML_TYPE_TQ2_0, K, N);
  ggml_tensor *X = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, K, 1);
  ggml_quantize_chunk(GGML_TYPE_TQ2_0, w.data(), W->data, 0, N, K, nullptr);
  std::copy(x.begin(), x.end(), (float *)X->data);
  ggml_tensor *Y = ggml_mul_mat(ctx, W, X);
  ggml_cgraph *gf = ggml_new_graph(ctx);
  ggml_build_forward_expand(gf, Y);
  ggml_threadpool_params tpp = ggml_threadpool_params_default(threads);
  ggml_threadpool *tp = ggml_threadpool_new(&tpp);
  ggml_cplan plan = ggml_graph_plan(gf, threads, tp);
  std::vector<uint8_t> work(plan.work_size + 64);
  plan.work_data = work.data();

  // A round: reps calls of each side in blocks of kBlock, the sides alternating block by block, so that a
  // burst of the host's noise falls on both sides of a round rather than on one; each side's median per
  // call over the round is kept.
  constexpr int kBlock = 10;
  std::vector<double> a8, wo, tq, fb;
  volatile float sink = 0.0f;  // keeps the FMA loop's result alive
  for (int r = 0; r < rounds; ++r) {
    std::vector<double> ta8, two, ttq, tfb;
    for (int done = 0; done < reps; done += kBlock) {
      const int n = std::min(kBlock, reps - done);
      // our workers poll between calls as they do inside the decode ops (a spin session), as ggml's poll
      ggml_threadpool_pause(tp);
      spin_session(1);
      time_calls([&] { mm(x.data(), packed.data(), scales.data(), y.data(), 1, K, N, G, 8, 1e-5f, threads, 0); },
                 n, ta8);
      time_calls([&] { mm(x.data(), packed.data(), scales.data(), y.data(), 1, K, N, G, 0, 1e-5f, threads, 0); },
                 n, two);
      spin_session(0);
      ggml_threadpool_resume(tp);
      time_calls([&] { ggml_graph_compute(gf, &plan); }, n, ttq);
      ggml_threadpool_pause(tp);
      time_calls([&] { sink = sink + fma_share(N * K / (8 * threads)); }, n, tfb);
      ggml_threadpool_resume(tp);
    }
    a8.push_back(median(ta8));
    wo.push_back(median(two));
    tq.push_back(median(ttq));
    fb.push_back(median(tfb));
  }
  std::printf("{");
  print_list("ours_a8", a8, false);
  print_list("ours_w", wo, false);
  print_list("tq2_0", tq, false);
  print_list("fma_bound", fb, true);
  std::printf("}\n");
  ggml_threadpool_free(tp);
  ggml_free(ctx);
  return 0;
}
