// lora_stream_bench: how fast the one-token LoRA kernels read their weights from memory, against
// the base GEMV's runs, on the page size the weights live on (issue 17, twentieth pass). Each
// variant streams 256 MiB of bf16 weights (more than any cache) through gemm::matmul_rows_ptr at
// one input, on T threads at once (each its own half), in the shapes of a decode step:
//   gemv   K 2048, one call a thread over its whole region (the base rows' long runs)
//   shrink K 2048, calls of 16 rows (64 KB: the fused shrink's items)
//   expand K 128, calls of 2816 rows (704 KB: the expand after a base run, r128)
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

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 2;
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 7;
  const Shape shapes[] = {{"gemv", 2048, 0}, {"shrink", 2048, 16}, {"expand", 128, 2816}};
  uint16_t* mem[2] = {map_weights(false), map_weights(true)};
  std::vector<float> x(2048, 0.01f), out(size_t(threads) * 1 << 20);
  std::vector<std::vector<double>> rate(6);
  for (int round = 0; round < rounds; round++) {
    for (int v = 0; v < 6; v++) {
      const int idx = (round & 1) ? 5 - v : v;  // ABBA over the rounds
      const Shape& sh = shapes[idx % 3];
      const uint16_t* w = mem[idx / 3];
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
  for (int idx = 0; idx < 6; idx++) {
    auto r = rate[static_cast<size_t>(idx)];
    std::sort(r.begin(), r.end());
    std::printf("{\"shape\":\"%s\",\"pages\":\"%s\",\"threads\":%d,\"gbs_per_thread_median\":%.2f,\"min\":%.2f,\"max\":%.2f}\n",
                shapes[idx % 3].name, idx / 3 ? "2MiB" : "4KiB", threads, r[r.size() / 2], r.front(), r.back());
  }
  return 0;
}
