// `pnpm bench:core-share [ROUNDS] [PAUSE_MS]`: do the VM's two vCPUs compute at full rate at the
// same time? (issue 17, twenty-fourth pass.) In-cache kernels, so no memory traffic: each is timed
// alone on CPU 0, alone on CPU 1, then on both at once, ROUNDS times (default 40, PAUSE_MS apart,
// default 1000). On two separate cores "together" is the sum of the two "alone" rates; where the
// host runs both vCPUs on one core (SMT siblings or time-sliced) it falls towards one core's rate,
// and kernels that lean on the shuffle pipes fall further. The kernels:
// - fma: eight independent zmm FMA chains (the FMA pipes' peak), GFLOP/s;
// - engine_bf16: lm's one-token bf16 GEMV (gemm::matmul_rows, the decode tile) over 48 rows of
//   K = 2048 held in L2, GB/s of weights;
// - f16_cvtph: one-token dot products of f16 rows by vcvtph2ps + FMA (the kind of kernel llama.cpp
//   runs on F16 weights), same shape, GB/s;
// - bf16_evenodd: bf16 rows widened by one shift (even elements) and one and (odd elements) per
//   64 bytes, x de-interleaved: fewer, in-lane uops, but another summation order than lm's tile.
// `pnpm bench:core-share mem [ROUNDS]` asks the same from memory (mem_mode below).
// Prints one JSON line per round, then a summary: per kernel the median of together ÷ (alone 0 +
// alone 1) over all rounds and over the rounds where fma's ratio fell under 0.75 ("shared"), and
// how uneven the two vCPUs are (the slower one's alone rate ÷ the faster one's).
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "../native/src/gemm.h"

namespace {

constexpr int64_t kK = 2048, kRows = 48;

#define LM_BENCH_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,f16c,fma")))

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

LM_BENCH_AVX512 double fma_rate(int64_t iters) {
  __m512 a[8];
  for (int i = 0; i < 8; i++) a[i] = _mm512_set1_ps(1.0f + static_cast<float>(i) * 1e-7f);
  const __m512 b = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < iters; i++)
    for (int j = 0; j < 8; j++) a[j] = _mm512_fmadd_ps(a[j], b, c);
  const double s = seconds_since(t0);
  float sink = 0;
  for (int i = 0; i < 8; i++) sink += _mm512_reduce_add_ps(a[i]);
  if (sink == 42.0f) std::puts("");
  return static_cast<double>(iters) * 8 * 32 / s / 1e9;
}

double engine_bf16_rate(int reps, const std::vector<uint16_t>& w, const std::vector<float>& x) {
  std::vector<float> out(kRows);
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; r++) lm::gemm::matmul_rows(x.data(), w.data(), nullptr, 1, kK, kRows, 0, kRows, out.data());
  const double s = seconds_since(t0);
  if (out[0] == 42.0f) std::puts("");
  return static_cast<double>(reps) * kRows * kK * 2 / s / 1e9;
}

LM_BENCH_AVX512 double f16_rate(int reps, const std::vector<uint16_t>& w, const std::vector<float>& x) {
  float sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; r++) {
    for (int64_t t = 0; t < kRows; t += 4) {
      __m512 acc[4];
      for (int p = 0; p < 4; p++) acc[p] = _mm512_setzero_ps();
      for (int64_t i = 0; i < kK; i += 16) {
        const __m512 xv = _mm512_loadu_ps(x.data() + i);
        for (int p = 0; p < 4; p++) {
          const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.data() + (t + p) * kK + i));
          acc[p] = _mm512_fmadd_ps(_mm512_cvtph_ps(h), xv, acc[p]);
        }
      }
      for (int p = 0; p < 4; p++) sink += _mm512_reduce_add_ps(acc[p]);
    }
  }
  const double s = seconds_since(t0);
  if (sink == 42.0f) std::puts("");
  return static_cast<double>(reps) * kRows * kK * 2 / s / 1e9;
}

LM_BENCH_AVX512 double evenodd_rate(int reps, const std::vector<uint16_t>& w, const std::vector<float>& xe,
                                    const std::vector<float>& xo) {
  const __m512i odd = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  float sink = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; r++) {
    for (int64_t t = 0; t < kRows; t += 8) {
      __m512 acc[8];
      for (int p = 0; p < 8; p++) acc[p] = _mm512_setzero_ps();
      for (int64_t i = 0; i < kK; i += 32) {
        const __m512 e = _mm512_loadu_ps(xe.data() + i / 2), o = _mm512_loadu_ps(xo.data() + i / 2);
        for (int p = 0; p < 8; p++) {
          const __m512i v = _mm512_loadu_si512(w.data() + (t + p) * kK + i);
          acc[p] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), e, acc[p]);
          acc[p] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, odd)), o, acc[p]);
        }
      }
      for (int p = 0; p < 8; p++) sink += _mm512_reduce_add_ps(acc[p]);
    }
  }
  const double s = seconds_since(t0);
  if (sink == 42.0f) std::puts("");
  return static_cast<double>(reps) * kRows * kK * 2 / s / 1e9;
}

// lm's one-token tile with a cheaper widening and the same bits: four rows' 8-element chunks in one
// zmm by 128-bit inserts, widened by unpacking with zeros (in-lane: no 512-bit cross-lane
// vpmovzxwd, no shift); lanes j of chunk r are row r's element chains j (0-3 from unpacklo, 4-7
// from unpackhi), so every FMA chain and the final hsum8 are the tile's. Returns the outputs of
// the last rep for the bit check against gemm::matmul_rows.
LM_BENCH_AVX512 inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s4 = _mm_add_ps(lo, hi);
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}
LM_BENCH_AVX512 inline __m512i chunks4(const uint16_t* const* rows, int64_t i) {
  __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[0] + i)));
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[1] + i)), 1);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[2] + i)), 2);
  return _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[3] + i)), 3);
}
LM_BENCH_AVX512 double unpack4_rate(int reps, const std::vector<uint16_t>& w, const std::vector<float>& x,
                                    float* out) {
  const __m512i zero = _mm512_setzero_si512();
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; r++) {
    for (int64_t t = 0; t < kRows; t += 8) {
      const uint16_t* rows[8];
      for (int q = 0; q < 8; q++) rows[q] = w.data() + (t + q) * kK;
      __m512 a_lo = _mm512_setzero_ps(), a_hi = a_lo, b_lo = a_lo, b_hi = a_lo;
      for (int64_t i = 0; i < kK; i += 8) {
        const __m512 xl = _mm512_broadcast_f32x4(_mm_loadu_ps(x.data() + i));
        const __m512 xh = _mm512_broadcast_f32x4(_mm_loadu_ps(x.data() + i + 4));
        const __m512i va = chunks4(rows, i), vb = chunks4(rows + 4, i);
        a_lo = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, va)), xl, a_lo);
        a_hi = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, va)), xh, a_hi);
        b_lo = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, vb)), xl, b_lo);
        b_hi = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, vb)), xh, b_hi);
      }
      alignas(64) float lo[2][16], hi[2][16];
      _mm512_store_ps(lo[0], a_lo);
      _mm512_store_ps(hi[0], a_hi);
      _mm512_store_ps(lo[1], b_lo);
      _mm512_store_ps(hi[1], b_hi);
      for (int q = 0; q < 8; q++) {
        const int h = q / 4, c = (q % 4) * 4;
        out[t + q] = hsum8(_mm256_setr_ps(lo[h][c], lo[h][c + 1], lo[h][c + 2], lo[h][c + 3], hi[h][c], hi[h][c + 1],
                                          hi[h][c + 2], hi[h][c + 3]));
      }
    }
  }
  return static_cast<double>(reps) * kRows * kK * 2 / seconds_since(t0) / 1e9;
}

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

constexpr int kKernels = 5;
const char* const kNames[kKernels] = {"fma", "engine_bf16", "f16_cvtph", "bf16_evenodd", "bf16_unpack4"};

struct Inputs {
  std::vector<uint16_t> bf16, f16;
  std::vector<float> x, xe, xo;
};

// One timed run of kernel `which` on `cpu` (its own copy of the inputs: no line shared between cores).
double run_kernel(int which, int cpu, std::atomic<int>* go) {
  pin(cpu);
  Inputs in;
  in.bf16.assign(kRows * kK, 0x3f80);  // 1.0 in bf16
  in.f16.assign(kRows * kK, 0x3c00);   // 1.0 in f16
  in.x.assign(kK, 0.5f);
  in.xe.assign(kK / 2, 0.5f);
  in.xo.assign(kK / 2, 0.5f);
  go->fetch_add(1);
  while (go->load() < 2) {
  }
  switch (which) {
    case 0: return fma_rate(20000000);
    case 1: return engine_bf16_rate(4000, in.bf16, in.x);
    case 2: return f16_rate(4000, in.f16, in.x);
    case 3: return evenodd_rate(4000, in.bf16, in.xe, in.xo);
    default: {
      std::vector<float> out(kRows);
      return unpack4_rate(4000, in.bf16, in.x, out.data());
    }
  }
}

double alone(int which, int cpu) {
  std::atomic<int> go{1};  // one participant: start at once
  double r = 0;
  std::thread t([&] { r = run_kernel(which, cpu, &go); });
  t.join();
  return r;
}

void together(int which, double* a, double* b) {
  std::atomic<int> go{0};  // both threads start when both are ready
  std::thread t0([&] { *a = run_kernel(which, 0, &go); });
  std::thread t1([&] { *b = run_kernel(which, 1, &go); });
  t0.join();
  t1.join();
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// `mem` mode: the same question from memory. 20 distinct [11264, 2048] 16-bit matrices (923 MB,
// TinyLlama's gate_up, in 2 MiB pages where the kernel gives them) read by 2 threads claiming
// 64-row chunks from a shared counter, per pass one of: lm's one-token bf16 GEMV (matmul_rows), with
// its per-row prefetch and with the address-order prefetch (set_gemv_prefetch_seq);
// f16 rows one at a time by vcvtph2ps, four accumulators a row (one address-ordered stream a
// thread, as llama.cpp's F16 dot walks its rows); a plain read of the same chunks (AVX-512 loads).
// Kernels alternate ABC CBA …; GB/s a pass and the medians, with per-round ratios.
constexpr int64_t kMemRows = 11264, kMemMats = 20, kChunk = 64;

LM_BENCH_AVX512 void f16_rows(const uint16_t* w, const float* x, int64_t rb, int64_t re, float* out) {
  for (int64_t j = rb; j < re; j++) {
    const uint16_t* row = w + j * kK;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t i = 0; i < kK; i += 64) {
      a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i))),
                           _mm512_loadu_ps(x + i), a0);
      a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i + 16))),
                           _mm512_loadu_ps(x + i + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i + 32))),
                           _mm512_loadu_ps(x + i + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i + 48))),
                           _mm512_loadu_ps(x + i + 48), a3);
    }
    out[j] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
  }
}

LM_BENCH_AVX512 void read_rows(const uint16_t* w, int64_t rb, int64_t re, float* out) {
  const __m512i* p = reinterpret_cast<const __m512i*>(w + rb * kK);
  const int64_t n = (re - rb) * kK * 2 / 64;
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (int64_t i = 0; i + 4 <= n; i += 4) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512(p + i));
    a1 = _mm512_xor_si512(a1, _mm512_load_si512(p + i + 1));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512(p + i + 2));
    a3 = _mm512_xor_si512(a3, _mm512_load_si512(p + i + 3));
  }
  out[rb] = static_cast<float>(_mm512_reduce_add_epi32(_mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3))));
}

int mem_mode(int rounds) {
  const size_t mat = static_cast<size_t>(kMemRows * kK), bytes = mat * kMemMats * 2;
  void* buf = nullptr;
  if (posix_memalign(&buf, 2 << 20, bytes) != 0) return 1;
  madvise(buf, bytes, MADV_HUGEPAGE);
  auto* w = static_cast<uint16_t*>(buf);
  for (size_t i = 0; i < mat * kMemMats; i++) w[i] = static_cast<uint16_t>(0x3c00 + (i & 7));
  std::vector<float> x(kK, 0.5f), out(static_cast<size_t>(kMemRows));
  const char* names[4] = {"engine_bf16", "engine_seq", "f16_rows", "read"};
  std::vector<double> gbs[4], r_seq, r_f16, r_read;
  const int64_t chunks = kMemMats * (kMemRows / kChunk);
  for (int round = 0; round < rounds; round++) {
    double g[4] = {};
    for (int q = 0; q < 4; q++) {
      const int which = round % 2 == 0 ? q : 3 - q;
      lm::gemm::set_gemv_prefetch_seq(which == 1);
      std::atomic<int64_t> next{0};
      auto work = [&] {
        std::vector<float> o(static_cast<size_t>(kMemRows));
        for (int64_t c; (c = next.fetch_add(1)) < chunks;) {
          const uint16_t* m = w + (c / (kMemRows / kChunk)) * mat;
          const int64_t rb = (c % (kMemRows / kChunk)) * kChunk, re = rb + kChunk;
          if (which <= 1) lm::gemm::matmul_rows(x.data(), m, nullptr, 1, kK, kMemRows, rb, re, o.data());
          else if (which == 2) f16_rows(m, x.data(), rb, re, o.data());
          else read_rows(m, rb, re, o.data());
        }
        if (o[0] == 42.0f) std::puts("");
      };
      const auto t0 = std::chrono::steady_clock::now();
      std::thread other(work);
      work();
      other.join();
      g[which] = static_cast<double>(bytes) / seconds_since(t0) / 1e9;
    }
    lm::gemm::set_gemv_prefetch_seq(false);
    for (int q = 0; q < 4; q++) gbs[q].push_back(g[q]);
    r_seq.push_back(g[1] / g[0]);
    r_f16.push_back(g[0] / g[2]);
    r_read.push_back(g[0] / g[3]);
    std::printf("{\"round\":%d,\"engine_bf16\":%.1f,\"engine_seq\":%.1f,\"f16_rows\":%.1f,\"read\":%.1f}\n", round,
                g[0], g[1], g[2], g[3]);
    std::fflush(stdout);
  }
  std::printf("{\"summary\":{\"rounds\":%d,\"bytes\":%zu,\"median_gbs\":{", rounds, bytes);
  for (int q = 0; q < 4; q++) std::printf("%s\"%s\":%.1f", q ? "," : "", names[q], median(gbs[q]));
  std::printf("},\"median_round_ratio\":{\"seq_over_engine\":%.3f,\"engine_over_f16_rows\":%.3f,"
              "\"engine_over_read\":%.3f}}}\n",
              median(r_seq), median(r_f16), median(r_read));
  std::free(buf);
  return 0;
}


// `gemv` mode (issue 17, twenty-fifth pass): candidate one-token bf16 GEMV kernels against lm's
// decode tile, from memory, same 923 MB as `mem`. Two threads per [11264, 2048] matrix claim rows as
// the engine's one-token matmul does (a quarter of what is left per thread, down to 8 rows; a
// barrier between matrices, one matmul after another as in a step), or fixed CHUNK-row claims from
// one counter over all matrices (`gemv ROUNDS CHUNK`). Kernels (GB/s of weights):
// - engine: gemm::matmul_rows with main's defaults (unpack widening, address-order prefetch);
// - f16_rows / read: one address-ordered stream a thread (as in `mem`);
// - t2: a 2-row tile, one zmm = rows r and r+1's 8 lanes (pair()'s layout), one FMA chain, and the
//   next bytes in address order prefetched PF bytes ahead (default 16 KB); same bits as lm's tile;
// - t2p: the same 2-row tile fed by whole 64-byte lines and a word permute (expand16's widening);
// - t4: 4 rows, two chains, same prefetch; same bits;
// - r1y: one row, one ymm chain of 8 lanes (same bits, latency-bound);
// - r1x4: one row, four zmm accumulators: another summation order, the one-stream reference;
// - t4p: t2p's widening on 4 rows (two chains);
// - t8: lm's 8-row tile (pair() widening, four chains) with t2's prefetch: the row count apart
//   from the prefetch;
// - engine_t4: gemm::matmul_rows with its 4-row decode tile (set_gemv_tile(4); the unpack widening
//   on as the engine's default, so t4u in the engine; before that was added, t4);
// - t4u: 4 rows widened as lm's unpack tile (chunks4 + in-lane unpacks, two chains), t4's prefetch.
constexpr int kGemvKernels = 12;
const char* const kGemvNames[kGemvKernels] = {"engine", "f16_rows", "read", "t2", "t2p", "t4", "r1y", "r1x4", "t4p", "t8", "engine_t4", "t4u"};
int64_t g_pf_bytes = 16384;

LM_BENCH_AVX512 inline __m512 pair2(const uint16_t* a, const uint16_t* b, int64_t i) {
  __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))),
                                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)), 1);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(both), 16));
}

// R contiguous rows from `rows` (R = 2 or 4): out[q] = row q · x with pair()'s lanes. During line
// step l it prefetches the R lines R·l … of the block PF bytes past the tile's start (one stream
// in address order), none at or past `end`.
template <int R>
LM_BENCH_AVX512 void tile_rows(const uint16_t* rows, const float* x, const char* end, float* out) {
  __m512 acc[R / 2];
  for (int p = 0; p < R / 2; p++) acc[p] = _mm512_setzero_ps();
  const char* pf = reinterpret_cast<const char*>(rows) + g_pf_bytes;
  for (int64_t line = 0; line < kK; line += 32) {
    const char* p = pf + (line / 32) * R * 64;
    for (int q = 0; q < R; q++)
      if (p + q * 64 < end) _mm_prefetch(p + q * 64, _MM_HINT_T1);
    for (int64_t i = line; i < line + 32; i += 8) {
      const __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i));
      for (int q = 0; q < R / 2; q++) acc[q] = _mm512_fmadd_ps(pair2(rows + 2 * q * kK, rows + (2 * q + 1) * kK, i), xv, acc[q]);
    }
  }
  for (int q = 0; q < R / 2; q++) {
    out[2 * q] = hsum8(_mm512_castps512_ps256(acc[q]));
    out[2 * q + 1] = hsum8(_mm512_extractf32x8_ps(acc[q], 1));
  }
}

// P row pairs (2P contiguous rows) fed by whole 64-byte lines: a word permute of a pair's two lines
// puts two k steps of both rows in the even and odd words, and a shift or a mask makes each an f32
// vector with pair()'s lanes (expand16_bf16's widening); P FMA chains. Prefetch as tile_rows.
template <int P>
LM_BENCH_AVX512 void tile_perm(const uint16_t* rows, const float* x, const char* end, float* out) {
  alignas(64) static const uint16_t kIdx[2][32] = {
      {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 32, 40, 33, 41, 34, 42, 35, 43, 36, 44, 37, 45, 38, 46, 39, 47},
      {16, 24, 17, 25, 18, 26, 19, 27, 20, 28, 21, 29, 22, 30, 23, 31,
       48, 56, 49, 57, 50, 58, 51, 59, 52, 60, 53, 61, 54, 62, 55, 63}};
  const __m512i idx0 = _mm512_load_si512(kIdx[0]), idx1 = _mm512_load_si512(kIdx[1]);
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  const char* pf = reinterpret_cast<const char*>(rows) + g_pf_bytes;
  __m512 acc[P];
  for (int q = 0; q < P; q++) acc[q] = _mm512_setzero_ps();
  for (int64_t i = 0; i < kK; i += 32) {
    const char* p = pf + (i / 32) * 128 * P;
    for (int q = 0; q < 2 * P; q++)
      if (p + q * 64 < end) _mm_prefetch(p + q * 64, _MM_HINT_T1);
    const __m512 x0 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i));
    const __m512 x1 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i + 8));
    const __m512 x2 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i + 16));
    const __m512 x3 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i + 24));
    for (int q = 0; q < P; q++) {
      const uint16_t* r = rows + 2 * q * kK;
      const __m512i a = _mm512_loadu_si512(r + i), b = _mm512_loadu_si512(r + kK + i);
      const __m512i lo = _mm512_permutex2var_epi16(a, idx0, b), hi = _mm512_permutex2var_epi16(a, idx1, b);
      acc[q] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)), x0, acc[q]);
      acc[q] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(lo, high)), x1, acc[q]);
      acc[q] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)), x2, acc[q]);
      acc[q] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(hi, high)), x3, acc[q]);
    }
  }
  for (int q = 0; q < P; q++) {
    out[2 * q] = hsum8(_mm512_castps512_ps256(acc[q]));
    out[2 * q + 1] = hsum8(_mm512_extractf32x8_ps(acc[q], 1));
  }
}

LM_BENCH_AVX512 void tile4_unpack(const uint16_t* rows, const float* x, const char* end, float* out) {
  const __m512i zero = _mm512_setzero_si512();
  const uint16_t* r[4] = {rows, rows + kK, rows + 2 * kK, rows + 3 * kK};
  const char* pf = reinterpret_cast<const char*>(rows) + g_pf_bytes;
  __m512 lo = _mm512_setzero_ps(), hi = lo;
  for (int64_t line = 0; line < kK; line += 32) {
    const char* p = pf + (line / 32) * 256;
    for (int q = 0; q < 4; q++)
      if (p + q * 64 < end) _mm_prefetch(p + q * 64, _MM_HINT_T1);
    for (int64_t i = line; i < line + 32; i += 8) {
      const __m512 xl = _mm512_broadcast_f32x4(_mm_loadu_ps(x + i));
      const __m512 xh = _mm512_broadcast_f32x4(_mm_loadu_ps(x + i + 4));
      const __m512i v = chunks4(r, i);
      lo = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, v)), xl, lo);
      hi = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, v)), xh, hi);
    }
  }
  alignas(64) float l[16], h[16];
  _mm512_store_ps(l, lo);
  _mm512_store_ps(h, hi);
  for (int q = 0; q < 4; q++)
    out[q] = hsum8(_mm256_setr_ps(l[4 * q], l[4 * q + 1], l[4 * q + 2], l[4 * q + 3], h[4 * q], h[4 * q + 1],
                                  h[4 * q + 2], h[4 * q + 3]));
}

LM_BENCH_AVX512 float row_ymm(const uint16_t* row, const float* x) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t i = 0; i < kK; i += 8) {
    const __m256 w = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(row + i))), 16));
    acc = _mm256_fmadd_ps(w, _mm256_loadu_ps(x + i), acc);
  }
  return hsum8(acc);
}

LM_BENCH_AVX512 float row_x4(const uint16_t* row, const float* x) {
  __m512 a[4];
  for (int q = 0; q < 4; q++) a[q] = _mm512_setzero_ps();
  for (int64_t i = 0; i < kK; i += 64) {
    for (int q = 0; q < 4; q++) {
      const __m512 w = _mm512_castsi512_ps(_mm512_slli_epi32(
          _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + i + 16 * q))), 16));
      a[q] = _mm512_fmadd_ps(w, _mm512_loadu_ps(x + i + 16 * q), a[q]);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])));
}

// Rows [rb, re) of matrix m by kernel `which`; `end` bounds the prefetch (the claim's end).
void gemv_rows(int which, const uint16_t* m, const float* x, int64_t rb, int64_t re, float* o) {
  const char* end = reinterpret_cast<const char*>(m + re * kK);
  switch (which) {
    case 0:
    case 10: return lm::gemm::matmul_rows(x, m, nullptr, 1, kK, kMemRows, rb, re, o);
    case 1: return f16_rows(m, x, rb, re, o);
    case 2: return read_rows(m, rb, re, o);
    case 3:
      for (int64_t j = rb; j < re; j += 2) tile_rows<2>(m + j * kK, x, end, o + j);
      return;
    case 4:
      for (int64_t j = rb; j < re; j += 2) tile_perm<1>(m + j * kK, x, end, o + j);
      return;
    case 5:
      for (int64_t j = rb; j < re; j += 4) tile_rows<4>(m + j * kK, x, end, o + j);
      return;
    case 6:
      for (int64_t j = rb; j < re; j++) o[j] = row_ymm(m + j * kK, x);
      return;
    case 7:
      for (int64_t j = rb; j < re; j++) o[j] = row_x4(m + j * kK, x);
      return;
    case 8:
      for (int64_t j = rb; j < re; j += 4) tile_perm<2>(m + j * kK, x, end, o + j);
      return;
    case 11:
      for (int64_t j = rb; j < re; j += 4) tile4_unpack(m + j * kK, x, end, o + j);
      return;
    default:
      for (int64_t j = rb; j < re; j += 8) tile_rows<8>(m + j * kK, x, end, o + j);
  }
}

int gemv_mode(int rounds, int64_t chunk, int mask) {
  {
    // Same-bits kernels against lm's tile on random rows and x (t2, t2p, t4, r1y must match).
    std::vector<uint16_t> w(kMemRows * kK);
    std::vector<float> x(kK), a(kMemRows), b(kMemRows);
    uint32_t seed = 12345;
    auto next = [&] { return seed = seed * 1664525u + 1013904223u; };
    for (auto& v : w) {
      const float f = (static_cast<float>(next() >> 8) / 16777216.0f - 0.5f) * 0.2f;
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      v = static_cast<uint16_t>(bits >> 16);
    }
    for (auto& v : x) v = static_cast<float>(next() >> 8) / 16777216.0f - 0.5f;
    lm::gemm::set_gemv_unpack(true);
    lm::gemm::set_gemv_prefetch_seq(true);
    lm::gemm::set_gemv_tile(8);
    gemv_rows(0, w.data(), x.data(), 0, 64, a.data());
    std::printf("{\"same_bits_as_engine\":{");
    for (int q = 3; q <= 11; q++) {
      if (q == 7) continue;
      lm::gemm::set_gemv_tile(q == 10 ? 4 : 8);
      std::fill(b.begin(), b.end(), 0.0f);
      gemv_rows(q, w.data(), x.data(), 0, 64, b.data());
      std::printf("%s\"%s\":%s", q > 3 ? "," : "", kGemvNames[q], std::memcmp(a.data(), b.data(), 64 * 4) == 0 ? "true" : "false");
    }
    std::printf("}}\n");
  }
  const size_t mat = static_cast<size_t>(kMemRows * kK), bytes = mat * kMemMats * 2;
  void* buf = nullptr;
  if (posix_memalign(&buf, 2 << 20, bytes) != 0) return 1;
  madvise(buf, bytes, MADV_HUGEPAGE);
  auto* w = static_cast<uint16_t*>(buf);
  for (size_t i = 0; i < mat * kMemMats; i++) w[i] = static_cast<uint16_t>(0x3f80 + (i & 7));
  std::vector<float> x(kK, 0.5f);
  std::vector<int> ks;
  for (int q = 0; q < kGemvKernels; q++)
    if (mask & (1 << q)) ks.push_back(q);
  std::vector<double> gbs[kGemvKernels], ratio[kGemvKernels];
  for (int round = 0; round < rounds; round++) {
    double g[kGemvKernels] = {};
    for (size_t s = 0; s < ks.size(); s++) {
      const int which = round % 2 == 0 ? ks[s] : ks[ks.size() - 1 - s];
      lm::gemm::set_gemv_tile(which == 10 ? 4 : 8);
      std::atomic<int64_t> counter{0};
      std::atomic<int> arrived{0};
      std::atomic<int64_t> claims[kMemMats];
      for (auto& c : claims) c.store(0);
      auto work = [&] {
        std::vector<float> o(static_cast<size_t>(kMemRows));
        if (chunk > 0) {
          const int64_t chunks = kMemMats * (kMemRows / chunk);
          for (int64_t c; (c = counter.fetch_add(1)) < chunks;) {
            const int64_t rb = (c % (kMemRows / chunk)) * chunk;
            gemv_rows(which, w + (c / (kMemRows / chunk)) * mat, x.data(), rb, rb + chunk, o.data());
          }
        } else {
          for (int mi = 0; mi < kMemMats; mi++) {
            int64_t begin = claims[mi].load();
            for (;;) {
              const int64_t left = kMemRows - begin;
              if (left <= 0) break;
              int64_t size = std::max<int64_t>((left / 4 + 7) / 8 * 8, 8);
              if (size >= left) size = left;
              if (!claims[mi].compare_exchange_weak(begin, begin + size)) continue;
              gemv_rows(which, w + mi * mat, x.data(), begin, begin + size, o.data());
              begin = claims[mi].load();
            }
            arrived.fetch_add(1);
            while (arrived.load() < 2 * (mi + 1)) {
            }
          }
        }
        if (o[0] == 42.0f) std::puts("");
      };
      const auto t0 = std::chrono::steady_clock::now();
      std::thread other(work);
      work();
      other.join();
      g[which] = static_cast<double>(bytes) / seconds_since(t0) / 1e9;
    }
    std::printf("{\"round\":%d", round);
    for (int q : ks) {
      gbs[q].push_back(g[q]);
      ratio[q].push_back(g[q] / g[ks[0]]);
      std::printf(",\"%s\":%.1f", kGemvNames[q], g[q]);
    }
    std::printf("}\n");
    std::fflush(stdout);
  }
  std::printf("{\"summary\":{\"rounds\":%d,\"chunk\":%lld,\"pf_bytes\":%lld,\"median_gbs\":{", rounds,
              static_cast<long long>(chunk), static_cast<long long>(g_pf_bytes));
  for (size_t s = 0; s < ks.size(); s++) std::printf("%s\"%s\":%.1f", s ? "," : "", kGemvNames[ks[s]], median(gbs[ks[s]]));
  std::printf("},\"median_round_ratio_over_%s\":{", kGemvNames[ks[0]]);
  for (size_t s = 0; s < ks.size(); s++) std::printf("%s\"%s\":%.3f", s ? "," : "", kGemvNames[ks[s]], median(ratio[ks[s]]));
  std::printf("}}}\n");
  std::free(buf);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "mem") == 0) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("f16c")) {
      std::printf("{\"skipped\":\"needs AVX-512 BW and F16C\"}\n");
      return 0;
    }
    return mem_mode(argc > 2 ? std::atoi(argv[2]) : 20);
  }
  if (argc > 1 && std::strcmp(argv[1], "gemv") == 0) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("f16c")) {
      std::printf("{\"skipped\":\"needs AVX-512 BW and F16C\"}\n");
      return 0;
    }
    if (argc > 4) g_pf_bytes = std::atoll(argv[4]);
    return gemv_mode(argc > 2 ? std::atoi(argv[2]) : 20, argc > 3 ? std::atoll(argv[3]) : 0,
                     argc > 5 ? static_cast<int>(std::strtol(argv[5], nullptr, 0)) : 0xfff);
  }
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 40;
  const int pause_ms = argc > 2 ? std::atoi(argv[2]) : 1000;
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("f16c") ||
      std::thread::hardware_concurrency() < 2) {
    std::printf("{\"skipped\":\"needs AVX-512 BW, F16C and 2 CPUs\"}\n");
    return 0;
  }
  {
    // bf16_unpack4 against lm's tile on random rows and x: the same bits or the comparison is void.
    std::vector<uint16_t> w(kRows * kK);
    std::vector<float> x(kK), a(kRows), b(kRows);
    uint32_t seed = 12345;
    auto next = [&] { return seed = seed * 1664525u + 1013904223u; };
    for (auto& v : w) {
      const float f = (static_cast<float>(next() >> 8) / 16777216.0f - 0.5f) * 0.2f;
      uint32_t bits;
      std::memcpy(&bits, &f, 4);
      v = static_cast<uint16_t>(bits >> 16);
    }
    for (auto& v : x) v = static_cast<float>(next() >> 8) / 16777216.0f - 0.5f;
    lm::gemm::matmul_rows(x.data(), w.data(), nullptr, 1, kK, kRows, 0, kRows, a.data());
    unpack4_rate(1, w, x, b.data());
    std::printf("{\"bf16_unpack4_same_bits_as_engine\":%s}\n",
                std::memcmp(a.data(), b.data(), a.size() * 4) == 0 ? "true" : "false");
  }
  std::vector<double> ratio[kKernels], shared[kKernels], slower[kKernels];
  int shared_rounds = 0;
  for (int round = 0; round < rounds; round++) {
    double r[kKernels] = {};
    std::printf("{\"round\":%d", round);
    for (int k = 0; k < kKernels; k++) {
      const double a0 = alone(k, 0), a1 = alone(k, 1);
      double t0 = 0, t1 = 0;
      together(k, &t0, &t1);
      r[k] = (t0 + t1) / (a0 + a1);
      ratio[k].push_back(r[k]);
      slower[k].push_back(std::min(a0, a1) / std::max(a0, a1));
      std::printf(",\"%s\":{\"alone\":[%.1f,%.1f],\"together\":[%.1f,%.1f]}", kNames[k], a0, a1, t0, t1);
    }
    std::printf("}\n");
    std::fflush(stdout);
    if (r[0] < 0.75) {
      shared_rounds++;
      for (int k = 0; k < kKernels; k++) shared[k].push_back(r[k]);
    }
    if (round + 1 < rounds) usleep(static_cast<useconds_t>(pause_ms) * 1000);
  }
  std::printf("{\"summary\":{\"rounds\":%d,\"shared_rounds\":%d,\"together_over_alone_median\":{", rounds,
              shared_rounds);
  for (int k = 0; k < kKernels; k++) std::printf("%s\"%s\":%.3f", k ? "," : "", kNames[k], median(ratio[k]));
  std::printf("},\"shared_rounds_median\":{");
  for (int k = 0; k < kKernels; k++) std::printf("%s\"%s\":%.3f", k ? "," : "", kNames[k], median(shared[k]));
  // Uneven vCPUs: the slower one's alone rate ÷ the faster one's (1: even), median and the share
  // of rounds under 0.9 (a host thread on one vCPU's core takes part of it without any steal).
  std::printf("},\"slower_over_faster_alone_median\":{");
  for (int k = 0; k < kKernels; k++) std::printf("%s\"%s\":%.3f", k ? "," : "", kNames[k], median(slower[k]));
  std::printf("},\"rounds_slower_under_0_9\":{");
  for (int k = 0; k < kKernels; k++) {
    const auto n = std::count_if(slower[k].begin(), slower[k].end(), [](double v) { return v < 0.9; });
    std::printf("%s\"%s\":%lld", k ? "," : "", kNames[k], static_cast<long long>(n));
  }
  std::printf("}}}\n");
  return 0;
}
