// `pnpm bench:gemm-cpu`: GFLOP/s of lm_matmul (bf16 and f32 weights) at TinyLlama's MLP shape
// (K 2048, N 5632) for decode batches and prefill chunks, on this machine's pool. Median of 5.
// Prefill sizes run both AVX-512 paths (packed panels and the plain tiles, which give the same
// bits), alternating, so the comparison holds on a busy machine. Each line also gives GFLOP/s per
// CPU-second of the process (all threads): on a shared machine that is the kernel's efficiency,
// wall time is mostly waiting for a core.
// Built where OpenBLAS is installed (libopenblas-dev), it also times OpenBLAS's sgemm at the prefill
// sizes, alternating with lm_matmul on the same inputs: f32 weights as they are, bf16 weights
// widened to f32 first (sgemm has no bf16 input; Debian's build exports no sbgemm), with the
// widening timed apart and the largest difference from lm_matmul's result.
// Last, the decode GEMV against the bandwidth floor: batch-1 bf16 matmuls over 20 distinct
// [11264, 2048] matrices (923 MB, TinyLlama's gate_up; more than any cache, on 4 KiB pages as a
// mapped checkpoint) alternating with the read-bandwidth probe of bench:cpu-anchor's floor, so the
// ratio holds better on a busy machine than two separate runs would.
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <vector>

#ifdef LM_BENCH_OPENBLAS
#include <cblas.h>
#endif

#include "../native/src/gemm.h"
#include "../native/tests/test_util.h"

using namespace lmtest;

namespace {

double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) * 1e-9;
}

struct Timing {
  std::vector<double> wall, cpu;
  double median(std::vector<double> v) const {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  }
};

#ifdef LM_BENCH_OPENBLAS
// lm_matmul against cblas_sgemm (row-major x[t,k] · W[n,k]ᵀ) at prefill sizes, both on the same pool
// size, alternating; median of 5.
void compare_openblas(std::mt19937& rng, const std::vector<float>& wf, const uint16_t* wb, int64_t k, int64_t n) {
  openblas_set_num_threads(lm_get_num_threads());
  std::printf("OpenBLAS %s (core %s), %d threads\n", OPENBLAS_VERSION, openblas_get_corename(), lm_get_num_threads());
  // bf16 weights for sgemm: widened to f32 once (a second copy of the weights, twice their bytes).
  std::vector<float> widened(static_cast<size_t>(n * k));
  auto w0 = std::chrono::steady_clock::now();
  for (size_t i = 0; i < widened.size(); i++) {
    const uint32_t bits = static_cast<uint32_t>(wb[i]) << 16;
    std::memcpy(&widened[i], &bits, 4);
  }
  std::printf("bf16 -> f32 widening for sgemm: %.2f ms (once per weight matrix, 2x its bytes kept)\n",
              std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0).count());
  for (lm_dtype wd : {LM_BF16, LM_F32}) {
    for (int64_t tokens : {64, 256}) {
      std::vector<float> x = random_floats(rng, static_cast<size_t>(tokens * k));
      std::vector<float> ours(static_cast<size_t>(tokens * n)), blas(ours.size());
      lm_tensor xt = tensor(x.data(), LM_F32, {tokens, k});
      lm_tensor wt = wd == LM_F32 ? tensor(const_cast<float*>(wf.data()), LM_F32, {n, k})
                                  : tensor(const_cast<uint16_t*>(wb), LM_BF16, {n, k});
      lm_tensor ot = tensor(ours.data(), LM_F32, {tokens, n});
      const float* bw = wd == LM_F32 ? wf.data() : widened.data();
      Timing timing[2];
      for (int rep = 0; rep < 5; rep++) {
        for (int v = 0; v < 2; v++) {
          const double c0 = cpu_seconds();
          auto t0 = std::chrono::steady_clock::now();
          if (v == 0) LM_CHECK(lm_matmul(&xt, &wt, nullptr, &ot));
          else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(tokens), static_cast<blasint>(n),
                        static_cast<blasint>(k), 1.0f, x.data(), static_cast<blasint>(k), bw, static_cast<blasint>(k),
                        0.0f, blas.data(), static_cast<blasint>(n));
          timing[v].wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
          timing[v].cpu.push_back(cpu_seconds() - c0);
        }
      }
      double diff = 0;
      for (size_t i = 0; i < ours.size(); i++) diff = std::max(diff, static_cast<double>(std::fabs(ours[i] - blas[i])));
      const double flop = 2.0 * static_cast<double>(tokens * n * k);
      for (int v = 0; v < 2; v++) {
        const double s = timing[v].median(timing[v].wall), c = timing[v].median(timing[v].cpu);
        std::printf("%-4s tokens=%-4lld %-9s %8.2f ms  %7.1f GFLOP/s  %7.1f GFLOP per CPU-s\n",
                    wd == LM_F32 ? "f32" : "bf16", static_cast<long long>(tokens), v == 0 ? "lm_matmul" : "sgemm",
                    s * 1e3, flop / s / 1e9, flop / c / 1e9);
      }
      std::printf("     max |lm_matmul - sgemm| = %.3g\n", diff);
    }
  }
}
#endif

// Decode GEMV GB/s against lm_read_bandwidth_gbs, alternating; median of 5 each.
void compare_floor(std::mt19937& rng) {
  const int64_t k = 2048, n = 11264, mats = 20;
  const size_t mat_bytes = static_cast<size_t>(n * k * 2), total = mat_bytes * mats;
  void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    std::fprintf(stderr, "decode floor: cannot map %zu bytes\n", total);
    return;
  }
  madvise(p, total, MADV_NOHUGEPAGE);  // 4 KiB pages, as a mapped checkpoint has
  auto* w = static_cast<uint16_t*>(p);
  std::uniform_int_distribution<int> dist(-1000, 1000);
  for (size_t i = 0; i < total / 2; i++) w[i] = bf16(static_cast<float>(dist(rng)) * 1e-4f);
  std::vector<float> x = random_floats(rng, static_cast<size_t>(k)), out(static_cast<size_t>(n));
  lm_tensor xt = tensor(x.data(), LM_F32, {1, k}), ot = tensor(out.data(), LM_F32, {1, n});
  std::vector<double> gemv, probe;
  for (int rep = 0; rep < 5; rep++) {
    auto t0 = std::chrono::steady_clock::now();
    for (int64_t m = 0; m < mats; m++) {
      lm_tensor wt = tensor(w + m * n * k, LM_BF16, {n, k});
      LM_CHECK(lm_matmul(&xt, &wt, nullptr, &ot));
    }
    gemv.push_back(static_cast<double>(total) / std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / 1e9);
    double gbs = 0;
    LM_CHECK(lm_read_bandwidth_gbs(size_t(1) << 30, 1, &gbs));
    probe.push_back(gbs);
  }
  munmap(p, total);
  std::sort(gemv.begin(), gemv.end());
  std::sort(probe.begin(), probe.end());
  std::printf("decode GEMV bf16 [11264, 2048] x 20 (923 MB): %.1f GB/s; read-bandwidth floor probe: %.1f GB/s; "
              "GEMV at %.0f %% of the floor (medians of 5, alternating)\n",
              gemv[2], probe[2], 100.0 * gemv[2] / probe[2]);
}

}  // namespace

int main() {
  std::mt19937 rng(1);
  const int64_t k = 2048, n = 5632;
  std::vector<float> wf = random_floats(rng, static_cast<size_t>(n * k), 0.05f);
  std::vector<uint16_t> wb(wf.size());
  for (size_t i = 0; i < wf.size(); i++) wb[i] = bf16(wf[i]);
  // LM_BENCH_FILE=checkpoint: bf16 weights read from a file mapping (4 KiB pages, as the engine
  // maps a checkpoint) instead of heap memory. The file's bytes past its first MiB are used as is.
  const uint16_t* wb_data = wb.data();
  if (const char* file = std::getenv("LM_BENCH_FILE")) {
    const int fd = open(file, O_RDONLY);
    void* p = fd < 0 ? MAP_FAILED : mmap(nullptr, (1 << 20) + n * k * 2, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      std::fprintf(stderr, "cannot map %s\n", file);
      return 1;
    }
    madvise(p, (1 << 20) + n * k * 2, MADV_POPULATE_READ);
    wb_data = reinterpret_cast<const uint16_t*>(static_cast<const char*>(p) + (1 << 20));
    std::printf("bf16 weights mapped from %s\n", file);
  }
  std::printf("threads=%d simd=%d avx512=%d\n", lm_get_num_threads(), lm_simd_enabled(),
              lm::gemm::avx512_active() ? 1 : 0);
  for (lm_dtype wd : {LM_BF16, LM_F32}) {
    for (int64_t tokens : {1, 4, 8, 64, 256}) {
      std::vector<float> x = random_floats(rng, static_cast<size_t>(tokens * k));
      std::vector<float> out(static_cast<size_t>(tokens * n));
      lm_tensor xt = tensor(x.data(), LM_F32, {tokens, k});
      lm_tensor wt = wd == LM_F32 ? tensor(wf.data(), LM_F32, {n, k}) : tensor(const_cast<uint16_t*>(wb_data), LM_BF16, {n, k});
      lm_tensor ot = tensor(out.data(), LM_F32, {tokens, n});
      const bool both = tokens >= 12 && lm::gemm::avx512_active();
      Timing timing[2];
      for (int rep = 0; rep < 5; rep++) {
        for (int v = 0; v < (both ? 2 : 1); v++) {
          lm::gemm::set_packed(v == 0);
          const double c0 = cpu_seconds();
          auto t0 = std::chrono::steady_clock::now();
          LM_CHECK(lm_matmul(&xt, &wt, nullptr, &ot));
          timing[v].wall.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
          timing[v].cpu.push_back(cpu_seconds() - c0);
        }
      }
      lm::gemm::set_packed(true);
      for (int v = 0; v < (both ? 2 : 1); v++) {
        const double s = timing[v].median(timing[v].wall), c = timing[v].median(timing[v].cpu);
        const double bytes = static_cast<double>(n * k) * (wd == LM_F32 ? 4 : 2);
        const double flop = 2.0 * static_cast<double>(tokens * n * k);
        std::printf("%-4s tokens=%-4lld %-6s %8.2f ms  %7.1f GFLOP/s  %6.1f GB/s of weights  %7.1f GFLOP per CPU-s\n",
                    wd == LM_F32 ? "f32" : "bf16", static_cast<long long>(tokens),
                    !both ? "" : (v == 0 ? "packed" : "tiles"), s * 1e3, flop / s / 1e9, bytes / s / 1e9,
                    flop / c / 1e9);
      }
    }
  }
#ifdef LM_BENCH_OPENBLAS
  compare_openblas(rng, wf, wb_data, k, n);
#endif
  compare_floor(rng);
  return 0;
}
