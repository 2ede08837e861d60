// CPU batched-LoRA benchmark: the core's segmented kernel against a naive per-token loop on the
// same inputs, in one run. Reports µs per call, the bytes a call must move (weights of the distinct
// adapters + x + read-modify-write of y) and the achieved GB/s, and checks both agree.
//
//   pnpm bench:lora-cpu            (builds native/build-bench and runs this)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../native/tests/test_util.h"

using namespace lmtest;
using Clock = std::chrono::steady_clock;

namespace {

struct Case {
  std::string name;
  int64_t tokens, h_in;
  std::vector<int32_t> widths;
  std::vector<int32_t> ranks;  // one per distinct adapter
};

// One token at a time, each reading its adapter's full A and B: what a per-token gather does.
void naive(const LoraProblem& p, std::vector<float>& y) {
  std::vector<float> h(LM_LORA_MAX_RANK);
  for (int64_t t = 0; t < p.tokens; t++) {
    const int32_t k = p.slot[static_cast<size_t>(t)];
    if (k < 0) continue;
    int64_t col = 0;
    for (int32_t s = 0; s < p.n_slices; s++) {
      const size_t e = static_cast<size_t>(k * p.n_slices + s);
      const int32_t r = p.rank[e];
      const float* A = p.a_pool.data() + p.a_offset[e];
      const float* B = p.b_pool.data() + p.b_offset[e];
      const float* x = p.x.data() + t * p.h_in;
      for (int32_t j = 0; j < r; j++) {
        float acc = 0;
        for (int64_t i = 0; i < p.h_in; i++) acc += A[j * p.h_in + i] * x[i];
        h[static_cast<size_t>(j)] = acc;
      }
      for (int32_t n = 0; n < p.widths[s]; n++) {
        float acc = 0;
        for (int32_t j = 0; j < r; j++) acc += B[n * r + j] * h[static_cast<size_t>(j)];
        y[static_cast<size_t>(t * p.n_out + col + n)] += p.scale[e] * acc;
      }
      col += p.widths[s];
    }
  }
}

template <typename Fn>
double median_us(Fn&& fn, int reps) {
  fn();  // warm-up
  std::vector<double> times;
  for (int i = 0; i < reps; i++) {
    auto t0 = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 7;
  std::mt19937 rng(1);
  const std::vector<Case> cases = {
      {"o_proj 4096, T=16, U=16, r=16", 16, 4096, {4096}, std::vector<int32_t>(16, 16)},
      {"o_proj 4096, T=64, U=4, r=16", 64, 4096, {4096}, std::vector<int32_t>(4, 16)},
      {"o_proj 4096, T=64, U=8, r=64", 64, 4096, {4096}, std::vector<int32_t>(8, 64)},
      {"o_proj 4096, T=256, U=2, r=64", 256, 4096, {4096}, std::vector<int32_t>(2, 64)},
      {"qkv 4096->4096+1024+1024, T=32, U=8, mixed r 8..128", 32, 4096, {4096, 1024, 1024}, {8, 16, 32, 64, 128, 8, 16, 32}},
      {"gate_up 4096->2x14336, T=16, U=4, r=16", 16, 4096, {14336, 14336}, std::vector<int32_t>(4, 16)},
  };
  std::printf("threads=%d simd=%s reps=%d (median)\n\n", lm_get_num_threads(), lm_simd_enabled() ? "avx2" : "scalar", reps);
  std::printf("| case | bytes/call | loramesh µs | loramesh GB/s | naive µs | naive GB/s | speed-up | max |diff| |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (const Case& c : cases) {
    LoraProblem p = make_lora_problem(rng, c.tokens, c.h_in, c.widths, c.ranks, 0.0);
    // every adapter used: spread tokens evenly over them
    for (int64_t t = 0; t < p.tokens; t++) p.slot[static_cast<size_t>(t)] = static_cast<int32_t>(t % p.n_keys);
    const int64_t entries = static_cast<int64_t>(p.rank.size());
    double weight_bytes = 0;
    for (int64_t e = 0; e < entries; e++) weight_bytes += 4.0 * p.rank[static_cast<size_t>(e)] * (p.h_in + p.widths[e % p.n_slices]);
    const double bytes = weight_bytes + 4.0 * p.tokens * p.h_in + 2 * 4.0 * p.tokens * p.n_out;

    lm_tensor a = tensor(p.a_pool.data(), LM_F32, {static_cast<int64_t>(p.a_pool.size())});
    lm_tensor b = tensor(p.b_pool.data(), LM_F32, {static_cast<int64_t>(p.b_pool.size())});
    lm_tensor rank = tensor(p.rank.data(), LM_I32, {entries}), scale = tensor(p.scale.data(), LM_F32, {entries});
    lm_tensor ao = tensor(p.a_offset.data(), LM_I64, {entries}), bo = tensor(p.b_offset.data(), LM_I64, {entries});
    lm_lora_weights w{&a, &b, p.n_keys, p.n_slices, {}, &rank, &scale, &ao, &bo, p.max_rank};
    std::memcpy(w.slice_width, p.widths, sizeof(p.widths));
    lm_tensor x = tensor(p.x.data(), LM_F32, {p.tokens, p.h_in}), slot = tensor(p.slot.data(), LM_I32, {p.tokens});
    std::vector<float> y_fast = p.y0, y_naive = p.y0;
    lm_tensor yt = tensor(y_fast.data(), LM_F32, {p.tokens, p.n_out});

    const double fast_us = median_us([&] { LM_CHECK(lm_lora_apply(&w, &x, &slot, &yt)); }, reps);
    const double naive_us = median_us([&] { naive(p, y_naive); }, reps);
    // Both applied the delta reps+1 times to the same start: compare.
    double diff = 0;
    for (size_t i = 0; i < y_fast.size(); i++) diff = std::max(diff, static_cast<double>(std::fabs(y_fast[i] - y_naive[i])));
    std::printf("| %s | %.1f MB | %.0f | %.1f | %.0f | %.1f | %.1fx | %.1e |\n", c.name.c_str(), bytes / 1e6, fast_us,
                bytes / fast_us / 1e3, naive_us, bytes / naive_us / 1e3, naive_us / fast_us, diff);
  }
  return 0;
}
