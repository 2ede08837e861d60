// Helpers for the C++ test and benchmark programs: tensors over std::vectors, random data, and a
// random heterogeneous-rank LoRA problem with its fp64 oracle.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "loramesh/core.h"

namespace lmtest {

inline lm_tensor tensor(void* data, lm_dtype dtype, std::initializer_list<int64_t> shape, lm_device device = LM_CPU) {
  lm_tensor t{};
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  t.ndim = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t d : shape) t.shape[i++] = d;
  return t;
}

inline std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline uint16_t bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
inline float from_bf16(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

#define LM_CHECK(expr)                                                                       \
  do {                                                                                       \
    lm_status _s = (expr);                                                                   \
    if (_s != LM_OK) {                                                                       \
      std::fprintf(stderr, "%s:%d: %s failed (%d): %s\n", __FILE__, __LINE__, #expr, (int)_s, \
                   lm_last_error());                                                         \
      std::exit(1);                                                                          \
    }                                                                                        \
  } while (0)

// A LoRA site with adapters of different ranks, stored at true rank in two pools.
struct LoraProblem {
  int64_t tokens, h_in;
  int32_t n_slices, n_keys, max_rank;
  int32_t widths[LM_LORA_MAX_SLICES]{};
  int64_t n_out = 0;
  std::vector<int32_t> rank;
  std::vector<float> scale;
  std::vector<int64_t> a_offset, b_offset;
  std::vector<float> a_pool, b_pool, x, y0;
  std::vector<int32_t> slot;
};

// ranks[k] is the rank of key k for every slice (slice 1 of every third key gets rank 0, so
// adapters that skip a projection are covered). Tokens pick keys uniformly, some none (-1).
inline LoraProblem make_lora_problem(std::mt19937& rng, int64_t tokens, int64_t h_in, std::vector<int32_t> widths,
                                     std::vector<int32_t> ranks, double none_fraction = 0.15) {
  LoraProblem p;
  p.tokens = tokens;
  p.h_in = h_in;
  p.n_slices = static_cast<int32_t>(widths.size());
  p.n_keys = static_cast<int32_t>(ranks.size());
  p.max_rank = 0;
  for (int s = 0; s < p.n_slices; s++) {
    p.widths[s] = widths[static_cast<size_t>(s)];
    p.n_out += widths[static_cast<size_t>(s)];
  }
  int64_t a_size = 0, b_size = 0;
  for (int32_t k = 0; k < p.n_keys; k++) {
    for (int32_t s = 0; s < p.n_slices; s++) {
      int32_t r = ranks[static_cast<size_t>(k)];
      if (p.n_slices > 1 && s == 1 && k % 3 == 2) r = 0;
      p.rank.push_back(r);
      p.scale.push_back(r ? 16.0f / static_cast<float>(r) : 0.0f);
      p.a_offset.push_back(a_size);
      p.b_offset.push_back(b_size);
      a_size += r * h_in;
      b_size += static_cast<int64_t>(widths[static_cast<size_t>(s)]) * r;
      p.max_rank = std::max(p.max_rank, r);
    }
  }
  p.a_pool = random_floats(rng, static_cast<size_t>(a_size), 0.1f);
  p.b_pool = random_floats(rng, static_cast<size_t>(b_size), 0.1f);
  p.x = random_floats(rng, static_cast<size_t>(tokens * h_in));
  p.y0 = random_floats(rng, static_cast<size_t>(tokens * p.n_out));
  std::uniform_real_distribution<double> u(0, 1);
  std::uniform_int_distribution<int32_t> pick(0, p.n_keys - 1);
  for (int64_t t = 0; t < tokens; t++) p.slot.push_back(u(rng) < none_fraction ? -1 : pick(rng));
  return p;
}

// y0 + Σ scale·B·(A·x) in double: the oracle.
inline std::vector<double> lora_oracle(const LoraProblem& p) {
  std::vector<double> y(p.y0.begin(), p.y0.end());
  for (int64_t t = 0; t < p.tokens; t++) {
    const int32_t k = p.slot[static_cast<size_t>(t)];
    if (k < 0) continue;
    int64_t col = 0;
    for (int32_t s = 0; s < p.n_slices; s++) {
      const size_t e = static_cast<size_t>(k * p.n_slices + s);
      const int32_t r = p.rank[e];
      std::vector<double> h(static_cast<size_t>(r), 0.0);
      for (int32_t j = 0; j < r; j++) {
        for (int64_t i = 0; i < p.h_in; i++) h[static_cast<size_t>(j)] += static_cast<double>(p.a_pool[static_cast<size_t>(p.a_offset[e] + j * p.h_in + i)]) * p.x[static_cast<size_t>(t * p.h_in + i)];
      }
      for (int32_t n = 0; n < p.widths[s]; n++) {
        double acc = 0;
        for (int32_t j = 0; j < r; j++) acc += static_cast<double>(p.b_pool[static_cast<size_t>(p.b_offset[e] + n * r + j)]) * h[static_cast<size_t>(j)];
        if (r) y[static_cast<size_t>(t * p.n_out + col + n)] += p.scale[e] * acc;
      }
      col += p.widths[s];
    }
  }
  return y;
}

}  // namespace lmtest
