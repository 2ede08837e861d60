// A small fixed pool of worker threads for CPU ops. parallel_for hands out indices from an atomic
// counter; callers make every index's work independent and fully owned by one thread, which is what
// keeps results identical for any thread count.
#pragma once

#include <cstdint>
#include <functional>

namespace lm {

void set_num_threads(int n);
int num_threads();

// Calls fn(i) for i in [0, n) across the pool (the calling thread helps). Blocks until done.
// Nested calls, and calls made while another thread holds the pool, run on the calling thread.
void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

// While one lives, parallel_for on this thread runs inline (a small job whose pool hand-off and
// worker wake-up would cost more than the work; results are the same either way).
class SerialRegion {
 public:
  SerialRegion();
  ~SerialRegion();
  SerialRegion(const SerialRegion&) = delete;
  SerialRegion& operator=(const SerialRegion&) = delete;

 private:
  bool previous_;
};

// While one lives, parallel_for on this thread uses at most `threads` threads, the caller included
// (1: inline). The native step uses it to leave a core to a same-host LoRA server's ring thread.
// Results are the same for any thread count.
class ThreadLimit {
 public:
  explicit ThreadLimit(int threads);
  ~ThreadLimit();
  ThreadLimit(const ThreadLimit&) = delete;
  ThreadLimit& operator=(const ThreadLimit&) = delete;

 private:
  int previous_;
};

// Names the calling thread (Linux; at most 15 characters), so per-thread CPU in /proc tells the
// pool and the ring threads from Node's own.
void name_this_thread(const char* name);

}  // namespace lm
