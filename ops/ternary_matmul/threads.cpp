// Threads: a persistent worker pool shared by every kernel and the thread-count setting.
//
// Waking a sleeping worker costs ~50 us on a 2-vCPU VM (the idle vCPU is halted: futex, IPI, host
// scheduling), as much as a whole decode-size matmul; a ~100M decode token has ~60 parallel regions.
// So the decode ops open a SpinSession for their whole call: meanwhile idle workers poll for the next
// job, and the caller polls for their completion, instead of sleeping (llama.cpp's threadpool polls
// the same way). Each poll gives up after g_spin_us without news and sleeps as before, so a long
// serial stretch, or a machine with more runnable threads than cores, costs at most that per wait.

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <unistd.h>

#include "ternary_common.h"

namespace bitcpm {

std::atomic<int> g_num_threads{0};
std::atomic<int> g_spin_us{1000};

namespace {
std::atomic<int> g_spin_sessions{0};

inline void cpu_relax() {
#if BITCPM_X86
  __builtin_ia32_pause();
#endif
}

// Polls done() while a spin session is open, for at most g_spin_us; true when done() turned true.
template <class F>
bool spin_until(F done) {
  if (g_spin_sessions.load(std::memory_order_relaxed) == 0) return done();
  const int us = g_spin_us.load(std::memory_order_relaxed);
  if (us <= 0) return done();
  const auto limit = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  for (int i = 0;; ++i) {
    if (done()) return true;
    if ((i & 63) == 63 &&
        (std::chrono::steady_clock::now() > limit || g_spin_sessions.load(std::memory_order_relaxed) == 0))
      return done();
    cpu_relax();
  }
}
}  // namespace

int64_t min_parallel_work() {
  return g_spin_sessions.load(std::memory_order_relaxed) > 0 && g_spin_us.load(std::memory_order_relaxed) > 0
             ? int64_t(1) << 14
             : int64_t(1) << 18;
}

SpinSession::SpinSession() { g_spin_sessions.fetch_add(1, std::memory_order_relaxed); }
SpinSession::~SpinSession() { g_spin_sessions.fetch_sub(1, std::memory_order_relaxed); }

int resolve_threads(int requested) {
  int n = requested > 0 ? requested : g_num_threads.load();
  if (n <= 0) {
    n = (int)std::thread::hardware_concurrency();
    if (n <= 0) n = 1;
  }
  return n;
}

namespace {

// Persistent worker pool (threads are reused across calls: spawning threads per call costs tens
// of microseconds, comparable to a whole decode-size matmul). One job at a time; a caller that
// finds the pool busy (e.g. two MindSpore kernels in parallel) falls back to fresh std::threads.
class Pool {
 public:
  static Pool &get() {
    static Pool *p = new Pool();  // leaked on purpose: no join at process exit
    return *p;
  }
  // Runs job(i) for i in [0, n); job(0) on the calling thread. Returns false if busy.
  bool run(int n, const std::function<void(int)> &job) {
    std::unique_lock<std::mutex> busy(run_mu_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    if (owner_ != getpid()) {  // forked child: the parent's workers do not exist here
      workers_.clear();
      owner_ = getpid();
    }
    ensure(n - 1);
    {
      std::lock_guard<std::mutex> lk(mu_);
      job_ = &job;
      active_ = n - 1;
      pending_ = n - 1;
      left_.store(n - 1, std::memory_order_relaxed);
      ++gen_;
      gen_seen_.store(gen_, std::memory_order_release);
    }
    cv_.notify_all();
    job(0);
    spin_until([&] { return left_.load(std::memory_order_acquire) == 0; });
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    job_ = nullptr;
    return true;
  }

 private:
  void ensure(int n) {
    while ((int)workers_.size() < n) {
      int idx = (int)workers_.size() + 1;
      uint64_t seen;
      {
        std::lock_guard<std::mutex> lk(mu_);
        seen = gen_;  // generation before the job that needs this worker
      }
      workers_.emplace_back([this, idx, seen] { loop(idx, seen); });
      workers_.back().detach();
    }
  }
  void loop(int idx, uint64_t seen) {
    for (;;) {
      const std::function<void(int)> *job;
      spin_until([&] { return gen_seen_.load(std::memory_order_acquire) != seen; });
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return gen_ != seen; });
        seen = gen_;
        if (idx > active_) continue;
        job = job_;
      }
      (*job)(idx);
      std::lock_guard<std::mutex> lk(mu_);
      left_.fetch_sub(1, std::memory_order_release);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
  std::mutex run_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int)> *job_ = nullptr;
  int active_ = 0, pending_ = 0;
  uint64_t gen_ = 0;
  std::atomic<uint64_t> gen_seen_{0};  // gen_, readable without the lock (polling workers)
  std::atomic<int> left_{0};           // pending_, readable without the lock (the polling caller)
  pid_t owner_ = getpid();
};

}  // namespace

bool pool_run(int n, const std::function<void(int)> &job) { return Pool::get().run(n, job); }

}  // namespace bitcpm
