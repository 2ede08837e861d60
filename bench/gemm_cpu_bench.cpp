// `pnpm bench:gemm-cpu`: GFLOP/s of lm_matmul (bf16 and f32 weights) at TinyLlama's MLP shape
// (K 2048, N 5632) for decode batches and a prefill chunk, on this machine's pool. Median of 5.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

#include "../native/tests/test_util.h"

using namespace lmtest;

int main() {
  std::mt19937 rng(1);
  const int64_t k = 2048, n = 5632;
  std::vector<float> wf = random_floats(rng, static_cast<size_t>(n * k), 0.05f);
  std::vector<uint16_t> wb(wf.size());
  for (size_t i = 0; i < wf.size(); i++) wb[i] = bf16(wf[i]);
  std::printf("threads=%d simd=%d\n", lm_get_num_threads(), lm_simd_enabled());
  for (lm_dtype wd : {LM_BF16, LM_F32}) {
    for (int64_t tokens : {1, 4, 8, 64, 256}) {
      std::vector<float> x = random_floats(rng, static_cast<size_t>(tokens * k));
      std::vector<float> out(static_cast<size_t>(tokens * n));
      lm_tensor xt = tensor(x.data(), LM_F32, {tokens, k});
      lm_tensor wt = wd == LM_F32 ? tensor(wf.data(), LM_F32, {n, k}) : tensor(wb.data(), LM_BF16, {n, k});
      lm_tensor ot = tensor(out.data(), LM_F32, {tokens, n});
      std::vector<double> secs;
      for (int rep = 0; rep < 5; rep++) {
        auto t0 = std::chrono::steady_clock::now();
        LM_CHECK(lm_matmul(&xt, &wt, nullptr, &ot));
        secs.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(secs.begin(), secs.end());
      const double s = secs[2];
      const double bytes = static_cast<double>(n * k) * (wd == LM_F32 ? 4 : 2);
      std::printf("%-4s tokens=%-4lld %8.2f ms  %7.1f GFLOP/s  %6.1f GB/s of weights\n", wd == LM_F32 ? "f32" : "bf16",
                  static_cast<long long>(tokens), s * 1e3, 2.0 * tokens * n * k / s / 1e9, bytes / s / 1e9);
    }
  }
  return 0;
}
