// lora_stream_bench: how fast the one-token LoRA kernels read their weights from memory, against
// the base GEMV's runs, on the page size the weights live on (issue 17, twentieth pass). Each
// variant streams 256 MiB of bf16 weights (more than any cache) through gemm::matmul_rows_ptr at
// one input, on T threads at once (each its own half), in the shapes of a decode step:
//   gemv   K 2048, one call a thread over its whole region (the base rows' long runs)
//   shrink K 2048, calls of 16 rows (64 KB: the fused shrink's items)
//   expand K 128, calls of 2816 rows (704 KB: the expand after a base run, r128), with the
//          default streamed line tile (several regions, a line-by-line prefetch; twenty-first pass)
//   expand-1stream  the same with the nineteenth pass's line tile over one region (burst prefetch)
// and, first, step shapes: each thread runs base rows (K 2048) in the run sizes of gate_up's
// one-token claims, each run followed by its rows' expand, as the fused site does (base rows on
// 2 MiB pages, B on 4 KiB; B on 64-byte lines or 16 bytes past them, as glibc places a large
// std::vector), streamed and one-stream expand; printed as the expand's and the base rows' GB/s.
// on anonymous memory madvised 4 KiB (MADV_NOHUGEPAGE: what a JavaScript-allocated adapter pool
// gets with THP in `madvise` mode) or 2 MiB (MADV_HUGEPAGE: what the mapped checkpoint gets).
// Variants alternate round by round; each line is the median GB/s a thread.
// Usage: lora_stream_bench [threads=2] [rounds=7]
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "../native/src/gemm.h"

namespace {

constexpr size_t kBytes = size_t(256) << 20;

uint16_t* map_weights(bool huge) {
  void* p = mmap(nullptr, kBytes + (size_t(2) << 20), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::perror("mmap");
    std::exit(1);
  }
  // 2 MiB-aligned start so the huge variant can get PMD entries.
  auto base = (reinterpret_cast<uintptr_t>(p) + (size_t(2) << 20) - 1) & ~((uintptr_t(2) << 20) - 1);
  void* q = reinterpret_cast<void*>(base);
  madvise(q, kBytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  auto* w = static_cast<uint16_t*>(q);
  uint32_t s = huge ? 1u : 2u;
  for (size_t i = 0; i < kBytes / 2; i++) {
    s = s * 1664525u + 1013904223u;
    w[i] = static_cast<uint16_t>(0x3c00u | ((s >> 16) & 0x1ffu));  // bf16 in [2^-7, 2^-6)
  }
  return w;
}

struct Shape {
  const char* name;
  int64_t k;
  int64_t rows_per_call;  // 0: the whole region in one call
  int expand_mode;        // gemm::set_expand16_mode for this shape
};

// One thread's pass over its region; returns seconds.
double pass(const uint16_t* w, int64_t k, int64_t rows, int64_t per_call, const float* x, float* out) {
  const float* xs[1] = {x};
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t step = per_call > 0 ? per_call : rows;
  for (int64_t r = 0; r < rows; r += step) {
    const int64_t e = std::min(rows, r + step);
    lm::gemm::matmul_rows_ptr(xs, w + r * k, 1, k, 0, e - r, out, 0);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The fused site's order on one thread (step shapes): base rows (K 2048) in runs of the sizes
// matmul's one-token claims take for gate_up (11264 rows on 2 threads: 2816, 1408, … 8), each run
// followed by the expand of the same rows of B (r128, from B's own region). Returns the seconds
// spent in the expand runs; base_secs gets the rest.
double pass_fused(const uint16_t* w, const uint16_t* b, int64_t rows, const float* x, float* out, double* base_secs) {
  static const int64_t kRuns[] = {2816, 1408, 704, 352, 176, 88, 48, 24, 8, 8};
  const float* xs[1] = {x};
  double e = 0, bs = 0;
  int64_t r = 0;
  for (size_t i = 0; r < rows; i = (i + 1) % (sizeof(kRuns) / sizeof(kRuns[0]))) {
    const int64_t n = std::min(rows - r, kRuns[i]);
    const auto t0 = std::chrono::steady_clock::now();
    lm::gemm::matmul_rows_ptr(xs, w + r * 2048, 1, 2048, 0, n, out, 0);
    const auto t1 = std::chrono::steady_clock::now();
    lm::gemm::matmul_rows_ptr(xs, b + r * 128, 1, 128, 0, n, out, 0);
    const auto t2 = std::chrono::steady_clock::now();
    bs += std::chrono::duration<double>(t1 - t0).count();
    e += std::chrono::duration<double>(t2 - t1).count();
    r += n;
  }
  *base_secs = bs;
  return e;
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  const Shape shapes[] = {
      {"gemv", 2048, 0, 2}, {"shrink", 2048, 16, 2}, {"expand", 128, 2816, 2}, {"expand-1stream", 128, 2816, 1}};
  constexpr int kShapes = 4, kVariants = 2 * kShapes;
  uint16_t* mem[2] = {map_weights(false), map_weights(true)};
  std::vector<float> x(2048, 0.01f), out(size_t(threads) * 1 << 20);
  std::vector<std::vector<double>> rate(kVariants);
  for (int round = 0; round < rounds; round++) {
    for (int v = 0; v < kVariants; v++) {
      const int idx = (round & 1) ? kVariants - 1 - v : v;  // ABBA over the rounds
      const Shape& sh = shapes[idx % kShapes];
      const uint16_t* w = mem[idx / kShapes];
      lm::gemm::set_expand16_mode(sh.expand_mode);
      const int64_t rows_all = static_cast<int64_t>(kBytes / 2) / sh.k;
      const int64_t rows = rows_all / threads / 2816 * 2816;
      std::vector<double> secs(static_cast<size_t>(threads));
      std::vector<std::thread> pool;
      for (int t = 0; t < threads; t++)
        pool.emplace_back([&, t] {
          secs[t] = pass(w + t * rows * sh.k, sh.k, rows, sh.rows_per_call, x.data(), out.data() + (size_t(t) << 20));
        });
      for (auto& th : pool) th.join();
      double s = 0;
      for (double v2 : secs) s += v2;
      rate[static_cast<size_t>(idx)].push_back(double(rows) * sh.k * 2 / (s / threads) / 1e9);
    }
  }
  // Step shapes: base runs then their expand, per thread, with the step's pages (base rows on
  // 2 MiB, B on 4 KiB, like the mapped checkpoint and the coupled backend's heap pools), B's rows
  // on 64-byte lines or 16 bytes past them. Expand modes 2 and 1, ABBA over the rounds.
  {
    const int64_t b_rows = static_cast<int64_t>(kBytes / 2) / 2048 / (threads + 1) / 2816 * 2816;
    const char* names[4] = {"step-expand", "step-expand-1stream", "step-misaligned-expand", "step-misaligned-expand-1stream"};
    std::vector<std::vector<double>> er(4), br(4);
    for (int round = 0; round < rounds; round++) {
      for (int v = 0; v < 4; v++) {
        const int idx = (round & 1) ? 3 - v : v;
        lm::gemm::set_expand16_mode(idx % 2 == 0 ? 2 : 1);
        // B 16 bytes past a line boundary: where glibc puts a large std::vector's data
        const uint16_t* bmem = idx >= 2 ? mem[0] + 8 : mem[0];
        std::vector<double> es(static_cast<size_t>(threads)), bs(static_cast<size_t>(threads));
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; t++)
          pool.emplace_back([&, t] {
            float* o = out.data() + (size_t(t) << 20);
            es[t] = pass_fused(mem[1] + t * b_rows * 2048, bmem + t * b_rows * 128, b_rows, x.data(), o, &bs[t]);
          });
        for (auto& th : pool) th.join();
        double se = 0, sb = 0;
        for (int t = 0; t < threads; t++) se += es[t], sb += bs[t];
        er[idx].push_back(double(b_rows) * 128 * 2 / (se / threads) / 1e9);
        br[idx].push_back(double(b_rows) * 2048 * 2 / (sb / threads) / 1e9);
      }
    }
    for (int idx = 0; idx < 4; idx++) {
      auto e = er[idx], b = br[idx];
      std::sort(e.begin(), e.end());
      std::sort(b.begin(), b.end());
      std::printf("{\"shape\":\"%s\",\"pages\":\"base 2MiB, B 4KiB%s\",\"threads\":%d,\"expand_gbs_per_thread_median\":%.2f,\"base_gbs_per_thread_median\":%.2f}\n",
                  names[idx], idx >= 2 ? ", 16 B past a line" : "", threads, e[e.size() / 2], b[b.size() / 2]);
    }
  }
  for (int idx = 0; idx < kVariants; idx++) {
    auto r = rate[static_cast<size_t>(idx)];
    std::sort(r.begin(), r.end());
    std::printf("{\"shape\":\"%s\",\"pages\":\"%s\",\"threads\":%d,\"gbs_per_thread_median\":%.2f,\"min\":%.2f,\"max\":%.2f}\n",
                shapes[idx % kShapes].name, idx / kShapes ? "2MiB" : "4KiB", threads, r[r.size() / 2], r.front(), r.back());
  }
  return 0;
}
