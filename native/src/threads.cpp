#include "threads.h"

#if defined(__linux__)
#include <pthread.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "priority.h"
#include "profile.h"

namespace lm {

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How long a worker keeps polling for the next job, and the caller for the end of one, before
// sleeping on the condition variable. A decode step runs hundreds of sub-millisecond parallel ops;
// a futex wake-up of a sleeping core costs tens of microseconds each, often more than the work.
constexpr auto kSpin = std::chrono::microseconds(50);

// Polls `ready` until it holds or kSpin passes; true when it held.
template <typename Ready>
bool spin_until(Ready&& ready) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; i++) {
    if (ready()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() >= until) return false;
  }
}

int default_threads() {
  unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(std::min(hc, 64u));
}

// Set while this thread runs a job's indices (or a SerialRegion): parallel_for then stays inline.
thread_local bool in_region = false;
// ThreadLimit's bound for this thread's parallel_for (0: none).
thread_local int thread_limit = 0;

class Pool {
 public:
  ~Pool() { resize(1); }

  // Not under region_mutex_: a step asks while another caller may hold the pool for a long op.
  int size() const { return size_.load(std::memory_order_relaxed); }

  void resize(int n) {
    std::lock_guard<std::mutex> lock(region_mutex_);
    stop_workers();
    // A new worker must not take the last finished job's generation for a new one: a worker that
    // started late (a busy machine) would otherwise try to join a stale job.
    uint64_t current;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      current = generation_.load();
    }
    for (int i = 1; i < n; i++) workers_.emplace_back([this, current] { worker_loop(current); });
    size_.store(static_cast<int>(workers_.size()) + 1, std::memory_order_relaxed);
  }

  void run(int64_t n, const std::function<void(int64_t)>& fn) {
    if (in_region) {  // nested: stay on this thread
      for (int64_t i = 0; i < n; i++) fn(i);
      return;
    }
    // One parallel region at a time. A concurrent caller (another Node async worker: the LoRA
    // delta while the base matmul runs) does its job on its own thread instead of waiting, so the
    // two overlap. Each index is still done whole by one thread: results are unchanged.
    if (thread_limit == 1) {
      in_region = true;
      for (int64_t i = 0; i < n; i++) fn(i);
      in_region = false;
      return;
    }
    std::unique_lock<std::mutex> region(region_mutex_, std::try_to_lock);
    if (!region.owns_lock() || workers_.empty() || n <= 1) {
      in_region = true;
      for (int64_t i = 0; i < n; i++) fn(i);
      in_region = false;
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = &fn;
      job_size_ = n;
      helpers_.store(thread_limit > 1 ? thread_limit - 1 : kCount, std::memory_order_relaxed);
      next_.store(0);
      uint64_t g = generation_.load() + 1;
      if ((g & kCount) == 0) g++;  // tag 0 marks a closed job
      joined_.store((g & kCount) << 32);
      generation_.store(g);
    }
    wake_.notify_all();
    in_region = true;
    drain();
    in_region = false;
    profile::Scope barrier(profile::kPoolWait);
    // Every index is taken. Close the job to late joiners and wait only for workers that joined
    // and may still run an index: a worker that was asleep or descheduled (a busy 2-core
    // machine) is not waited for; it finds the job closed when it gets a core.
    if (!spin_until([this] { return close_if_idle(); })) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return close_if_idle(); });
    }
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = nullptr;
  }

 private:
  void drain() {
    for (;;) {
      int64_t i = next_.fetch_add(1);
      if (i >= job_size_) return;
      (*job_)(i);
    }
  }

  void worker_loop(uint64_t seen) {
    name_this_thread("lm-pool");
    // Never SCHED_FIFO for good: a pool worker runs prefill-sized jobs too (nice applies).
    priority::raise_this_thread(/*fifo_ok=*/false);
    for (;;) {
      // Poll first (a new job usually follows within microseconds during a step), then sleep.
      spin_until([&] { return quit_.load(std::memory_order_acquire) || generation_.load(std::memory_order_acquire) != seen; });
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return quit_.load() || generation_.load() != seen; });
        if (quit_.load()) return;
        seen = generation_.load();
      }
      if (!join(seen)) continue;  // the caller already took every index and closed the job
      in_region = true;
      drain();
      in_region = false;
      if ((joined_.fetch_sub(1, std::memory_order_acq_rel) & kCount) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        done_.notify_all();
      }
    }
  }

  // joined_ = generation << 32 | workers draining it. A worker joins only the open job of the
  // generation it woke for; the caller closes it (generation → 0) once no worker is draining.
  static constexpr uint64_t kCount = 0xffffffffu;
  bool join(uint64_t generation) {
    uint64_t s = joined_.load(std::memory_order_acquire);
    const uint64_t helpers = helpers_.load(std::memory_order_relaxed);
    while ((s >> 32) == (generation & kCount) && (s & kCount) < helpers)
      if (joined_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) return true;
    return false;
  }
  bool close_if_idle() {
    uint64_t s = joined_.load(std::memory_order_acquire);
    while ((s & kCount) == 0)
      if (joined_.compare_exchange_weak(s, 0, std::memory_order_acq_rel)) return true;
    return false;
  }

  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_.store(true);
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
    quit_.store(false);
  }

  std::mutex region_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::vector<std::thread> workers_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t job_size_ = 0;
  std::atomic<int64_t> next_{0};
  std::atomic<uint64_t> joined_{0};
  std::atomic<uint64_t> generation_{0};  // written under mutex_, polled without it
  std::atomic<bool> quit_{false};
  std::atomic<int> size_{1};
  std::atomic<uint64_t> helpers_{kCount};  // workers the open job may take (ThreadLimit)
};


Pool& pool() {
  static Pool* p = [] {
    auto* created = new Pool();  // never destroyed: worker threads must outlive static destructors
    created->resize(default_threads());
    return created;
  }();
  return *p;
}

}  // namespace

void set_num_threads(int n) { pool().resize(n <= 0 ? default_threads() : std::min(n, 64)); }
int num_threads() { return pool().size(); }
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn) { pool().run(n, fn); }

ThreadLimit::ThreadLimit(int threads) : previous_(thread_limit) { thread_limit = std::max(threads, 1); }
ThreadLimit::~ThreadLimit() { thread_limit = previous_; }

SerialRegion::SerialRegion() : previous_(in_region) { in_region = true; }
SerialRegion::~SerialRegion() { in_region = previous_; }

void name_this_thread(const char* name) {
#if defined(__linux__)
  pthread_setname_np(pthread_self(), name);
#else
  (void)name;
#endif
}

}  // namespace lm
