#include "profile.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace lm::profile {

namespace {

struct Counter {
  std::atomic<int64_t> calls{0}, ns{0}, cpu_ns{0}, bytes{0};
};
Counter g_counters[kOpCount];

const char* const kNames[kOpCount] = {"embedding", "rmsnorm",  "qkv matmul", "rope",    "kv write",
                                      "attention", "o matmul", "gate_up matmul", "silu_mul", "down matmul",
                                      "add",       "lm_head",  "lora site",  "other",   "pool wait", "step"};

void dump() {
  int64_t total = 0, cpu_total = 0;
  for (int i = 0; i < kOpCount; i++) {
    if (i == kPoolWait || i == kStep) continue;
    total += g_counters[i].ns.load();
    cpu_total += g_counters[i].cpu_ns.load();
  }
  std::fprintf(stderr, "loramesh step profile (wall, calling thread; share of the ops' sum; pool wait is inside the ops)\n");
  std::fprintf(stderr, "%-16s %8s %10s %7s %8s %10s %7s %10s\n", "op", "calls", "wall ms", "share", "GB/s",
               "CPU ms", "share", "GB/CPU-s");
  for (int i = 0; i < kOpCount; i++) {
    const Counter& c = g_counters[i];
    if (c.calls.load() == 0) continue;
    const double ms = static_cast<double>(c.ns.load()) / 1e6;
    const double cpu_ms = static_cast<double>(c.cpu_ns.load()) / 1e6;
    const double bytes = static_cast<double>(c.bytes.load());
    std::fprintf(stderr, "%-16s %8lld %10.2f %6.1f%% %8.2f %10.2f %6.1f%% %10.2f\n", kNames[i],
                 static_cast<long long>(c.calls.load()), ms, 100.0 * ms * 1e6 / static_cast<double>(total ? total : 1),
                 ms > 0 ? bytes / ms / 1e6 : 0.0, cpu_ms, 100.0 * cpu_ms * 1e6 / static_cast<double>(cpu_total ? cpu_total : 1),
                 cpu_ms > 0 ? bytes / cpu_ms / 1e6 : 0.0);
  }
}

bool read_env() {
  const char* v = std::getenv("LORAMESH_STEP_PROFILE");
  const bool on = v != nullptr && std::strcmp(v, "1") == 0;
  if (on) std::atexit(dump);
  return on;
}

bool requested() {
  static const bool on = read_env();
  return on;
}

thread_local bool t_decode = false;

}  // namespace

bool enabled() { return t_decode; }
void set_step_tokens(int64_t tokens) { t_decode = tokens == 1 && requested(); }

int64_t process_cpu_ns() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

void record(Op op, int64_t ns, int64_t cpu_ns, int64_t bytes) {
  Counter& c = g_counters[op];
  c.calls.fetch_add(1, std::memory_order_relaxed);
  c.ns.fetch_add(ns, std::memory_order_relaxed);
  c.cpu_ns.fetch_add(cpu_ns, std::memory_order_relaxed);
  c.bytes.fetch_add(bytes, std::memory_order_relaxed);
}

}  // namespace lm::profile
