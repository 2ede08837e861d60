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

#include "../native/src/gemm.h"
#include "../native/src/ops.h"
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

uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return static_cast<uint16_t>((bits + 0x7fff + ((bits >> 16) & 1)) >> 16);
}

// One decode site of a TinyLlama-1.1B-shaped model: the base projection (bf16 weights) and one
// adapter's LoRA delta at `rank` on `rows` rows, timed alternately in the same process. The LoRA
// pools are bf16 (what an adapter stored as bf16 is packed as) or f32 (what every adapter was
// packed as before). The LoRA call is timed with B as lm_lora_weights stores it ([width, rank],
// the tiles with the short-row prefetch) and with B k-major ([rank, width], b_transposed: what the
// native step's and the LoRA servers' pools hold since issue 17's seventh pass), alternating.
// Returns {base µs, lora µs k-major, lora µs row-major, base bytes, lora bytes}.
struct SiteTimes {
  double base_us, lora_us, lora_rowmajor_us, base_bytes, lora_bytes;
};

SiteTimes decode_site(std::mt19937& rng, int64_t h_in, const std::vector<int32_t>& widths, int32_t rank, int64_t rows,
                      bool bf16_pool, int reps) {
  // Copies of everything, used in turn, so that each call reads from memory as a decode step does
  // (22 layers of weights), not from the last-level cache: kCopies adapters, enough base copies
  // for 64 MB.
  constexpr int32_t kCopies = 16;
  LoraProblem p = make_lora_problem(rng, rows, h_in, widths, std::vector<int32_t>(kCopies, rank), 0.0);
  const int64_t entries = static_cast<int64_t>(p.rank.size());
  std::vector<uint16_t> a16(p.a_pool.size()), b16(p.b_pool.size());
  for (size_t i = 0; i < a16.size(); i++) a16[i] = to_bf16(p.a_pool[i]);
  for (size_t i = 0; i < b16.size(); i++) b16[i] = to_bf16(p.b_pool[i]);
  const lm_dtype pool_dtype = bf16_pool ? LM_BF16 : LM_F32;
  lm_tensor a = bf16_pool ? tensor(a16.data(), LM_BF16, {static_cast<int64_t>(a16.size())})
                          : tensor(p.a_pool.data(), LM_F32, {static_cast<int64_t>(p.a_pool.size())});
  lm_tensor b = bf16_pool ? tensor(b16.data(), LM_BF16, {static_cast<int64_t>(b16.size())})
                          : tensor(p.b_pool.data(), LM_F32, {static_cast<int64_t>(p.b_pool.size())});
  lm_tensor rk = tensor(p.rank.data(), LM_I32, {entries}), scale = tensor(p.scale.data(), LM_F32, {entries});
  lm_tensor ao = tensor(p.a_offset.data(), LM_I64, {entries}), bo = tensor(p.b_offset.data(), LM_I64, {entries});
  lm_lora_weights w{&a, &b, p.n_keys, p.n_slices, {}, &rk, &scale, &ao, &bo, p.max_rank, 0};
  std::memcpy(w.slice_width, p.widths, sizeof(p.widths));
  // The same pools with every B k-major.
  std::vector<float> bt32 = p.b_pool;
  std::vector<uint16_t> bt16 = b16;
  LM_CHECK(lm::cpu::transpose_lora_b(bf16_pool ? static_cast<void*>(bt16.data()) : bt32.data(), pool_dtype,
                                     static_cast<int64_t>(b16.size()), p.n_keys, p.n_slices, p.widths, p.rank.data(),
                                     p.b_offset.data())
               ? LM_OK
               : LM_ERR_ARGUMENT);
  lm_tensor bt = bf16_pool ? tensor(bt16.data(), LM_BF16, {static_cast<int64_t>(bt16.size())})
                           : tensor(bt32.data(), LM_F32, {static_cast<int64_t>(bt32.size())});
  lm_lora_weights wt_k = w;
  wt_k.b_pool = &bt;
  wt_k.b_transposed = 1;
  lm_tensor x = tensor(p.x.data(), LM_F32, {rows, h_in}), slot = tensor(p.slot.data(), LM_I32, {rows});
  std::vector<float> y = p.y0;
  lm_tensor yt = tensor(y.data(), LM_F32, {rows, p.n_out});
  // The base weight [n_out, h_in] in bf16, larger than the last-level cache as in a real model.
  const int64_t base_elems = p.n_out * h_in;
  const int64_t base_copies = std::max<int64_t>(2, (int64_t(64) << 20) / (2 * base_elems) + 1);
  std::vector<uint16_t> wb(static_cast<size_t>(base_elems * base_copies));
  for (size_t i = 0; i < wb.size(); i++) wb[i] = to_bf16(static_cast<float>(static_cast<int32_t>(i % 251) - 125) / 4096.f);
  lm_tensor wt = tensor(wb.data(), LM_BF16, {p.n_out, h_in});
  int64_t base_turn = 0, lora_turn = 0;
  std::vector<float> out(static_cast<size_t>(rows * p.n_out));
  lm_tensor ot = tensor(out.data(), LM_F32, {rows, p.n_out});
  // Alternate the two in rounds so load changes on a shared machine hit both alike.
  std::vector<double> base, lora, lora_rowmajor;
  const lm_lora_weights* weights = &wt_k;
  auto lora_call = [&] {
    const int32_t key = static_cast<int32_t>(lora_turn++ % kCopies);
    for (auto& k : p.slot) k = key;
    LM_CHECK(lm_lora_apply(weights, &x, &slot, &yt));
  };
  for (int i = 0; i < reps; i++) {
    base.push_back(median_us(
        [&] {
          wt.data = wb.data() + (base_turn++ % base_copies) * base_elems;
          LM_CHECK(lm_matmul(&x, &wt, nullptr, &ot));
        },
        3));
    weights = &wt_k;
    lora.push_back(median_us(lora_call, 3));
    weights = &w;
    lora_rowmajor.push_back(median_us(lora_call, 3));
  }
  std::sort(base.begin(), base.end());
  std::sort(lora.begin(), lora.end());
  std::sort(lora_rowmajor.begin(), lora_rowmajor.end());
  const double elem = bf16_pool ? 2.0 : 4.0;
  double lora_bytes = 0;
  for (int s = 0; s < p.n_slices; s++) lora_bytes += elem * rank * (h_in + p.widths[s]);  // one adapter's
  return {base[base.size() / 2], lora[lora.size() / 2], lora_rowmajor[lora_rowmajor.size() / 2], 2.0 * static_cast<double>(p.n_out * h_in), lora_bytes};
}

void decode_sites(std::mt19937& rng, int reps) {
  struct Site {
    const char* name;
    int64_t h_in;
    std::vector<int32_t> widths;
  };
  // TinyLlama-1.1B: hidden 2048, 32 heads / 4 KV heads of 64, intermediate 5632.
  const std::vector<Site> sites = {
      {"qkv", 2048, {2048, 256, 256}}, {"o", 2048, {2048}}, {"gate_up", 2048, {5632, 5632}}, {"down", 5632, {2048}}};
  std::printf("\nDecode sites of a TinyLlama-1.1B layer (base bf16 GEMV vs one adapter's LoRA delta, alternating, "
              "median of %d):\n\n",
              reps);
  std::printf("| rank | rows | pool | site | base µs | base GB/s | LoRA µs | LoRA GB/s | LoRA µs, B row-major | "
              "row-major GB/s | LoRA ÷ base time | LoRA ÷ base bytes |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (int32_t rank : {16, 128}) {
    for (int64_t rows : {1, 8}) {
      for (bool bf16_pool : {true, false}) {
        double base_sum = 0, lora_sum = 0, nopf_sum = 0, base_bytes = 0, lora_bytes = 0;
        for (const Site& s : sites) {
          const SiteTimes t = decode_site(rng, s.h_in, s.widths, rank, rows, bf16_pool, reps);
          std::printf("| %d | %lld | %s | %s | %.0f | %.1f | %.0f | %.1f | %.0f | %.1f | %.1f %% | %.1f %% |\n", rank,
                      static_cast<long long>(rows), bf16_pool ? "bf16" : "f32", s.name, t.base_us,
                      t.base_bytes / t.base_us / 1e3, t.lora_us, t.lora_bytes / t.lora_us / 1e3, t.lora_rowmajor_us,
                      t.lora_bytes / t.lora_rowmajor_us / 1e3, 100 * t.lora_us / t.base_us,
                      100 * t.lora_bytes / t.base_bytes);
          base_sum += t.base_us, lora_sum += t.lora_us, nopf_sum += t.lora_rowmajor_us, base_bytes += t.base_bytes,
              lora_bytes += t.lora_bytes;
        }
        std::printf("| %d | %lld | %s | **layer** | %.0f | %.1f | %.0f | %.1f | %.0f | %.1f | **%.1f %%** | %.1f %% |\n",
                    rank, static_cast<long long>(rows), bf16_pool ? "bf16" : "f32", base_sum,
                    base_bytes / base_sum / 1e3, lora_sum, lora_bytes / lora_sum / 1e3, nopf_sum,
                    lora_bytes / nopf_sum / 1e3, 100 * lora_sum / base_sum, 100 * lora_bytes / base_bytes);
      }
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::atoi(argv[1]) : 7;
  const bool sites_only = argc > 2 && std::string(argv[2]) == "--sites";
  std::mt19937 rng(1);
  if (sites_only) {
    decode_sites(rng, reps);
    return 0;
  }
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
    lm_lora_weights w{&a, &b, p.n_keys, p.n_slices, {}, &rank, &scale, &ao, &bo, p.max_rank, 0};
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
  decode_sites(rng, reps);
  return 0;
}
