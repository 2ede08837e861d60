// Read bandwidth of this machine's memory, as the decode-speed floor of a benchmark needs it: a
// buffer larger than any cache is streamed, either by the CPU pool (best of a few passes) or by
// threads of its own (every pass returned, for a median).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common.h"
#include "threads.h"

namespace {
// Reads data[b, e) once in four independent streams (no dependency chain between loads).
uint64_t stream_xor(const uint64_t* data, size_t b, size_t e) {
  uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
  size_t i = b;
  for (; i + 4 <= e; i += 4) {
    a0 ^= data[i];
    a1 ^= data[i + 1];
    a2 ^= data[i + 2];
    a3 ^= data[i + 3];
  }
  for (; i < e; i++) a0 ^= data[i];
  return a0 ^ a1 ^ a2 ^ a3;
}
}  // namespace

extern "C" lm_status lm_read_bandwidth_gbs(size_t bytes, int32_t passes, double* gbs_out) {
  using lm::fail;
  if (gbs_out == nullptr) return fail(LM_ERR_ARGUMENT, "read bandwidth: output is required");
  if (bytes < (1u << 20) || passes < 1) return fail(LM_ERR_ARGUMENT, "read bandwidth: at least 1 MiB and 1 pass");
  const size_t words = bytes / sizeof(uint64_t);
  auto* data = static_cast<uint64_t*>(std::aligned_alloc(64, words * sizeof(uint64_t)));
  if (data == nullptr) return fail(LM_ERR_MEMORY, "read bandwidth: cannot allocate the buffer");
  for (size_t i = 0; i < words; i++) data[i] = i * 0x9e3779b97f4a7c15ull;
  const int64_t chunk = 1 << 17;  // words per work item (1 MiB)
  const int64_t items = static_cast<int64_t>((words + chunk - 1) / chunk);
  std::vector<uint64_t> sink(static_cast<size_t>(items));
  double best = 0;
  for (int32_t p = 0; p < passes; p++) {
    auto start = std::chrono::steady_clock::now();
    lm::parallel_for(items, [&](int64_t it) {
      const size_t b = static_cast<size_t>(it * chunk), e = std::min(words, b + static_cast<size_t>(chunk));
      sink[static_cast<size_t>(it)] = stream_xor(data, b, e);  // keeps the loads alive
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::max(best, static_cast<double>(words * sizeof(uint64_t)) / s / 1e9);
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep ^ v;
  (void)keep;
  std::free(data);
  *gbs_out = best;
  return LM_OK;
}

// The floor's probe since issue 17's twelfth pass: `threads` threads of their own (not the pool, so
// a pass is never one thread doing both halves because a worker was asleep), each streaming its
// contiguous share of one buffer once, started together; every pass's wall-clock GB/s is returned so
// the caller reports a median and its spread instead of the best pass (the best of three 35 ms
// passes picked the top of a distribution that spans 13–59 GB/s on the 2-vCPU VM).
extern "C" lm_status lm_read_bandwidth_passes(size_t bytes, int32_t passes, int32_t threads, double* gbs_out) {
  using lm::fail;
  if (gbs_out == nullptr) return fail(LM_ERR_ARGUMENT, "read bandwidth: output is required");
  if (bytes < (1u << 20) || passes < 1 || threads < 1 || threads > 64)
    return fail(LM_ERR_ARGUMENT, "read bandwidth: at least 1 MiB, 1 pass and 1 to 64 threads");
  const size_t words = bytes / sizeof(uint64_t);
  auto* data = static_cast<uint64_t*>(std::aligned_alloc(64, (words * sizeof(uint64_t) + 63) / 64 * 64));
  if (data == nullptr) return fail(LM_ERR_MEMORY, "read bandwidth: cannot allocate the buffer");
  for (size_t i = 0; i < words; i++) data[i] = i * 0x9e3779b97f4a7c15ull;
  std::vector<uint64_t> sink(static_cast<size_t>(threads));
  for (int32_t p = 0; p < passes; p++) {
    std::atomic<int32_t> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    for (int32_t t = 0; t < threads; t++) {
      pool.emplace_back([&, t] {
        const size_t b = words * static_cast<size_t>(t) / static_cast<size_t>(threads);
        const size_t e = words * static_cast<size_t>(t + 1) / static_cast<size_t>(threads);
        ready.fetch_add(1);
        while (!go.load(std::memory_order_acquire)) {
        }
        sink[static_cast<size_t>(t)] = stream_xor(data, b, e);
      });
    }
    while (ready.load() < threads) std::this_thread::yield();
    const auto start = std::chrono::steady_clock::now();
    go.store(true, std::memory_order_release);
    for (auto& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    gbs_out[p] = static_cast<double>(words * sizeof(uint64_t)) / s / 1e9;
  }
  volatile uint64_t keep = 0;
  for (uint64_t v : sink) keep = keep ^ v;
  (void)keep;
  std::free(data);
  return LM_OK;
}
