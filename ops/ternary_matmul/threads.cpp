// Threads: a persistent worker pool shared by every kernel and the thread-count setting.

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
      ++gen_;
    }
    cv_.notify_all();
    job(0);
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
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return gen_ != seen; });
        seen = gen_;
        if (idx > active_) continue;
        job = job_;
      }
      (*job)(idx);
      std::lock_guard<std::mutex> lk(mu_);
      if (--pending_ == 0) done_cv_.notify_one();
    }
  }
  std::mutex run_mu_, mu_;
  std::condition_variable cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(int)> *job_ = nullptr;
  int active_ = 0, pending_ = 0;
  uint64_t gen_ = 0;
  pid_t owner_ = getpid();
};

}  // namespace

bool pool_run(int n, const std::function<void(int)> &job) { return Pool::get().run(n, job); }

}  // namespace bitcpm
