#include "profile.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <algorithm>
#include <array>
#include <mutex>
#include <vector>

namespace lm::profile {

namespace {

struct Counter {
  std::atomic<int64_t> calls{0}, ns{0}, cpu_ns{0}, bytes{0};
};
constexpr int kTables = 4;  // variant 0/1 (an alternated switch), + 2 for steps with adapters
Counter g_tables[kTables][kOpCount];
int g_variant = 0;
// Pool waits by the family they happened in, per variant: calls and wall ns.
std::atomic<int64_t> g_wait_calls[kTables][kOpCount], g_wait_ns[kTables][kOpCount];
// Pool waits by length: under 5, 20, 100, 1000 µs and longer (calls, wall ns).
constexpr int kBuckets = 5;
const int64_t kBucketNs[kBuckets - 1] = {5000, 20000, 100000, 1000000};
std::atomic<int64_t> g_hist_calls[kTables][kBuckets], g_hist_ns[kTables][kBuckets];
thread_local Op t_current = kStep;  // set by the step's thread between steps; records come from that thread
// One-token matmul jobs by family (record_job), per table.
struct JobCounter {
  std::atomic<int64_t> jobs{0}, solo{0}, wall{0}, dispatch{0}, wake{0}, busy{0}, rows_ns{0}, rows_bytes{0}, spread{0},
      tail{0}, slots{0};
};
JobCounter g_jobs[kTables][kOpCount];
// Per-step sums of the quantities above (the projections' jobs: lm_head left out), so the table can
// give medians over steps: on this VM a run mixes fast and slow minutes, and sums over a run are
// the slow minutes' figures. Columns: step wall, jobs' wall, idle thread time, base rows' thread
// time and bytes, fused shrink and expand thread time.
enum StepCol : int { kSWall, kSJobs, kSIdle, kSRows, kSRowBytes, kSShrink, kSExpand, kSCols };
std::atomic<int64_t> g_step_acc[kSCols];
// Expand calls by size (record_expand_call): calls, bytes, thread ns per table and bucket.
constexpr int kCallBuckets = 5;
const int64_t kCallBucketBytes[kCallBuckets - 1] = {4096, 16384, 65536, 262144};
std::atomic<int64_t> g_call_n[kTables][kCallBuckets], g_call_bytes[kTables][kCallBuckets], g_call_ns[kTables][kCallBuckets];
thread_local bool t_thread_timing = false;
std::mutex g_steps_mutex;
std::vector<std::array<int64_t, kSCols>> g_steps[kTables];

const char* const kNames[kOpCount] = {"embedding", "rmsnorm",  "qkv matmul", "rope",    "kv write",
                                      "attention", "o matmul", "gate_up matmul", "silu_mul", "down matmul",
                                      "add",       "lm_head",  "lora site",  "other",   "pool wait", "step",
                                      "fused shrink*", "fused poll*", "fused base*", "fused expand*"};

void dump_table(int variant) {
  const Counter* g_counters = g_tables[variant];
  if (g_counters[kStep].calls.load() == 0) return;
  int64_t total = 0, cpu_total = 0;
  for (int i = 0; i < kOpCount; i++) {
    if (i == kPoolWait || i >= kStep) continue;
    total += g_counters[i].ns.load();
    cpu_total += g_counters[i].cpu_ns.load();
  }
  std::fprintf(stderr, "loramesh step profile%s%s (wall, calling thread; share of the ops' sum; pool wait is inside the ops)\n",
               (variant & 1) ? ", variant 1" : "", (variant & 2) ? ", steps with adapters" : "");
  if (g_counters[kFusedBase].calls.load() > 0)
    std::fprintf(stderr, "(* rows: thread time summed over the pool's threads, inside the matmul rows; GB/s per thread)\n");
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

void dump_waits(int variant) {
  if (g_tables[variant][kPoolWait].calls.load() == 0) return;
  std::fprintf(stderr, "pool wait by op%s%s (calls, wall ms):", (variant & 1) ? ", variant 1" : "",
               (variant & 2) ? ", steps with adapters" : "");
  for (int i = 0; i < kOpCount; i++) {
    const int64_t calls = g_wait_calls[variant][i].load();
    if (calls == 0) continue;
    std::fprintf(stderr, " %s %lld %.2f;", kNames[i], static_cast<long long>(calls),
                 static_cast<double>(g_wait_ns[variant][i].load()) / 1e6);
  }
  std::fprintf(stderr, "\npool waits by length (<5 µs, <20, <100, <1000, longer: calls, wall ms):");
  for (int b = 0; b < kBuckets; b++)
    std::fprintf(stderr, " %lld %.2f;", static_cast<long long>(g_hist_calls[variant][b].load()),
                 static_cast<double>(g_hist_ns[variant][b].load()) / 1e6);
  std::fprintf(stderr, "\n");
}

void dump_jobs(int variant) {
  bool any = false;
  for (int i = 0; i < kOpCount; i++) any = any || g_jobs[variant][i].jobs.load() > 0;
  if (!any) return;
  std::fprintf(stderr,
               "one-token matmul jobs by op%s%s (ms summed over jobs; thread-ms for busy/rows/idle; idle = "
               "threads x wall - busy; GB/s per thread)\n",
               (variant & 1) ? ", variant 1" : "", (variant & 2) ? ", steps with adapters" : "");
  std::fprintf(stderr, "%-16s %7s %6s %9s %9s %9s %9s %9s %8s %9s %9s %9s\n", "op", "jobs", "solo", "wall", "dispatch",
               "wake", "spread", "tail", "busy", "idle", "rows", "rows GB/s");
  const auto ms = [](int64_t ns) { return static_cast<double>(ns) / 1e6; };
  for (int i = 0; i < kOpCount; i++) {
    const JobCounter& c = g_jobs[variant][i];
    if (c.jobs.load() == 0) continue;
    const int64_t woke = c.jobs.load() - c.solo.load();
    std::fprintf(stderr, "%-16s %7lld %6lld %9.2f %9.2f %9.2f %9.2f %9.2f %8.2f %9.2f %9.2f %9.2f\n", kNames[i],
                 static_cast<long long>(c.jobs.load()), static_cast<long long>(c.solo.load()), ms(c.wall.load()),
                 ms(c.dispatch.load()), woke > 0 ? ms(c.wake.load()) : 0.0, ms(c.spread.load()), ms(c.tail.load()),
                 ms(c.busy.load()), ms(c.slots.load() - c.busy.load()), ms(c.rows_ns.load()),
                 c.rows_ns.load() > 0 ? static_cast<double>(c.rows_bytes.load()) / static_cast<double>(c.rows_ns.load()) : 0.0);
  }
}

void dump_step_medians() {
  const char* const names[kSCols] = {"step", "jobs", "idle", "rows", "rows GB", "shrink", "expand"};
  for (int v = 0; v < kTables; v++) {
    std::vector<std::array<int64_t, kSCols>>& steps = g_steps[v];
    if (steps.empty()) continue;
    std::fprintf(stderr, "per-step medians%s%s over %zu steps (ms; thread-ms for idle/rows/shrink/expand; rows GB/s per thread of the median step's rows):",
                 (v & 1) ? ", variant 1" : "", (v & 2) ? ", steps with adapters" : "", steps.size());
    std::vector<int64_t> col(steps.size());
    for (int c = 0; c < kSCols; c++) {
      for (size_t i = 0; i < steps.size(); i++) col[i] = steps[i][static_cast<size_t>(c)];
      std::nth_element(col.begin(), col.begin() + static_cast<std::ptrdiff_t>(col.size() / 2), col.end());
      const double m = static_cast<double>(col[col.size() / 2]);
      std::fprintf(stderr, " %s %.2f;", names[c], c == kSRowBytes ? m / 1e9 : m / 1e6);
    }
    // Rows GB/s per thread, step by step, median.
    std::vector<double> rate;
    for (const auto& st : steps)
      if (st[kSRows] > 0) rate.push_back(static_cast<double>(st[kSRowBytes]) / static_cast<double>(st[kSRows]));
    if (!rate.empty()) {
      std::nth_element(rate.begin(), rate.begin() + static_cast<std::ptrdiff_t>(rate.size() / 2), rate.end());
      std::fprintf(stderr, " rows GB/s %.2f", rate[rate.size() / 2]);
    }
    std::fprintf(stderr, "\n");
  }
}

void dump_expand_calls() {
  const char* const names[kCallBuckets] = {"<4KB", "<16KB", "<64KB", "<256KB", ">=256KB"};
  for (int v = 0; v < kTables; v++) {
    int64_t all = 0;
    for (int b = 0; b < kCallBuckets; b++) all += g_call_n[v][b].load();
    if (all == 0) continue;
    const double steps = static_cast<double>(std::max<size_t>(1, g_steps[v].size()));
    std::fprintf(stderr, "fused expand calls by B bytes%s%s (per step: calls, KB, thread-ms; GB/s per thread):",
                 (v & 1) ? ", variant 1" : "", (v & 2) ? ", steps with adapters" : "");
    for (int b = 0; b < kCallBuckets; b++) {
      const double n = static_cast<double>(g_call_n[v][b].load()), by = static_cast<double>(g_call_bytes[v][b].load()),
                   ns = static_cast<double>(g_call_ns[v][b].load());
      std::fprintf(stderr, " %s %.1f %.0f %.3f %.2f;", names[b], n / steps, by / steps / 1024, ns / steps / 1e6,
                   ns > 0 ? by / ns : 0.0);
    }
    std::fprintf(stderr, "\n");
  }
}

void dump() {
  dump_step_medians();
  dump_expand_calls();
  for (int v = 0; v < kTables; v++) dump_waits(v);
  for (int v = 0; v < kTables; v++) dump_jobs(v);
  for (int v = 0; v < kTables; v++) dump_table(v);
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

Op enter(Op op) {
  const Op previous = t_current;
  t_current = op;
  return previous;
}
void leave(Op previous) { t_current = previous; }

void record_job(const JobSplit& j) {
  if (t_current != kLmHead) {
    g_step_acc[kSJobs].fetch_add(j.wall, std::memory_order_relaxed);
    g_step_acc[kSIdle].fetch_add(j.wall * j.threads - j.busy, std::memory_order_relaxed);
    g_step_acc[kSRows].fetch_add(j.rows_ns, std::memory_order_relaxed);
    g_step_acc[kSRowBytes].fetch_add(j.rows_bytes, std::memory_order_relaxed);
  }
  JobCounter& c = g_jobs[g_variant][t_current];
  c.jobs.fetch_add(1, std::memory_order_relaxed);
  if (j.wake < 0) {
    c.solo.fetch_add(1, std::memory_order_relaxed);
  } else {
    c.wake.fetch_add(j.wake, std::memory_order_relaxed);
  }
  c.wall.fetch_add(j.wall, std::memory_order_relaxed);
  c.dispatch.fetch_add(j.dispatch, std::memory_order_relaxed);
  c.busy.fetch_add(j.busy, std::memory_order_relaxed);
  c.rows_ns.fetch_add(j.rows_ns, std::memory_order_relaxed);
  c.rows_bytes.fetch_add(j.rows_bytes, std::memory_order_relaxed);
  c.spread.fetch_add(j.spread, std::memory_order_relaxed);
  c.tail.fetch_add(j.tail, std::memory_order_relaxed);
  c.slots.fetch_add(j.wall * j.threads, std::memory_order_relaxed);
}

void record_expand_call(int64_t bytes, int64_t ns) {
  int b = 0;
  while (b < kCallBuckets - 1 && bytes >= kCallBucketBytes[b]) b++;
  g_call_n[g_variant][b].fetch_add(1, std::memory_order_relaxed);
  g_call_bytes[g_variant][b].fetch_add(bytes, std::memory_order_relaxed);
  g_call_ns[g_variant][b].fetch_add(ns, std::memory_order_relaxed);
}
void set_thread_timing(bool on) { t_thread_timing = on; }
bool thread_timing() { return t_thread_timing; }

void set_variant(int variant) { g_variant = variant & (kTables - 1); }

void record(Op op, int64_t ns, int64_t cpu_ns, int64_t bytes) {
  if (op == kPoolWait) {
    g_wait_calls[g_variant][t_current].fetch_add(1, std::memory_order_relaxed);
    g_wait_ns[g_variant][t_current].fetch_add(ns, std::memory_order_relaxed);
    int b = 0;
    while (b < kBuckets - 1 && ns >= kBucketNs[b]) b++;
    g_hist_calls[g_variant][b].fetch_add(1, std::memory_order_relaxed);
    g_hist_ns[g_variant][b].fetch_add(ns, std::memory_order_relaxed);
  }
  if (op == kFusedShrink) g_step_acc[kSShrink].fetch_add(ns, std::memory_order_relaxed);
  if (op == kFusedExpand) g_step_acc[kSExpand].fetch_add(ns, std::memory_order_relaxed);
  if (op == kStep) {
    std::array<int64_t, kSCols> row{};
    for (int i = 0; i < kSCols; i++) row[static_cast<size_t>(i)] = g_step_acc[i].exchange(0);
    row[kSWall] = ns;
    std::lock_guard<std::mutex> lock(g_steps_mutex);
    g_steps[g_variant].push_back(row);
  }
  Counter& c = g_tables[g_variant][op];
  c.calls.fetch_add(1, std::memory_order_relaxed);
  c.ns.fetch_add(ns, std::memory_order_relaxed);
  c.cpu_ns.fetch_add(cpu_ns, std::memory_order_relaxed);
  c.bytes.fetch_add(bytes, std::memory_order_relaxed);
}

}  // namespace lm::profile
