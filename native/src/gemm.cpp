// Matmul tiles. AVX-512 path: a tile is 8 weight rows × up to 6 tokens. A zmm register holds the
// 8 FMA lanes of two outputs (rows r and r+1 of one token), so each output keeps exactly the lane
// layout of the scalar/AVX2 dot product while one instruction does two outputs' work. Weight rows
// are loaded once per tile and reused for all its tokens; for prefill-sized batches a bf16 row
// block is widened to f32 once into a thread-local buffer and reused by every token tile.
// Other CPUs use the AVX2 (or scalar) dot products, which give the same bits.
#include "gemm.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "simd.h"

#if defined(__x86_64__) || defined(_M_X64)
// GCC 12's AVX-512 headers trip these on their own cast intrinsics (undefined upper lanes).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define LM_X86 1
#endif

namespace lm::gemm {

namespace {

#ifdef LM_X86
#define LM_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))

bool detect_avx512() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
}

LM_AVX512 inline __m512 pair(const float* a, const float* b, int64_t i) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(a + i)), _mm256_loadu_ps(b + i), 1);
}
LM_AVX512 inline __m512 pair(const uint16_t* a, const uint16_t* b, int64_t i) {
  __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i))),
                                         _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)), 1);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(both), 16));
}

LM_AVX512 inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s4 = _mm_add_ps(lo, hi);
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

inline float widen(float v) { return v; }
inline float widen(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

LM_AVX512 inline float fma1(float a, float b, float c) {
  return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

// out[r][c] = row r · x[c] for 8 rows and C tokens.
template <typename W, int C>
LM_AVX512 void tile(const W* const rows[8], const float* const xs[C], int64_t k, float out[8][6]) {
  __m512 acc[4][C];
  for (int p = 0; p < 4; p++)
    for (int c = 0; c < C; c++) acc[p][c] = _mm512_setzero_ps();
  const int64_t main = k & ~int64_t(7);
  for (int64_t i = 0; i < main; i += 8) {
    const __m512 w0 = pair(rows[0], rows[1], i), w1 = pair(rows[2], rows[3], i);
    const __m512 w2 = pair(rows[4], rows[5], i), w3 = pair(rows[6], rows[7], i);
    for (int c = 0; c < C; c++) {
      const __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(xs[c] + i));
      acc[0][c] = _mm512_fmadd_ps(w0, xv, acc[0][c]);
      acc[1][c] = _mm512_fmadd_ps(w1, xv, acc[1][c]);
      acc[2][c] = _mm512_fmadd_ps(w2, xv, acc[2][c]);
      acc[3][c] = _mm512_fmadd_ps(w3, xv, acc[3][c]);
    }
  }
  for (int p = 0; p < 4; p++) {
    for (int c = 0; c < C; c++) {
      out[2 * p][c] = hsum8(_mm512_castps512_ps256(acc[p][c]));
      out[2 * p + 1][c] = hsum8(_mm512_extractf32x8_ps(acc[p][c], 1));
    }
  }
  for (int64_t i = main; i < k; i++) {
    for (int r = 0; r < 8; r++) {
      const float wi = widen(rows[r][i]);
      for (int c = 0; c < C; c++) out[r][c] = fma1(wi, xs[c][i], out[r][c]);
    }
  }
}

template <typename W>
LM_AVX512 void tile_any(int c, const W* const rows[8], const float* const* xs, int64_t k, float out[8][6]) {
  switch (c) {
    case 1: return tile<W, 1>(rows, xs, k, out);
    case 2: return tile<W, 2>(rows, xs, k, out);
    case 3: return tile<W, 3>(rows, xs, k, out);
    case 4: return tile<W, 4>(rows, xs, k, out);
    case 5: return tile<W, 5>(rows, xs, k, out);
    default: return tile<W, 6>(rows, xs, k, out);
  }
}

// Tokens per tile and the batch size from which bf16 row blocks are widened once and reused.
constexpr int64_t kTileTokens = 6;
constexpr int64_t kWidenFrom = 12;
constexpr int64_t kTokenBlock = 48;

template <typename W>
void block_avx512(const float* x, const W* const rows[8], int64_t tokens, int64_t k, int64_t n, int64_t row,
                  const float* bias, float* out) {
  for (int64_t t = 0; t < tokens; t += kTileTokens) {
    const int c = static_cast<int>(std::min(kTileTokens, tokens - t));
    const float* xs[kTileTokens];
    for (int j = 0; j < c; j++) xs[j] = x + (t + j) * k;
    float res[8][6];
    tile_any<W>(c, rows, xs, k, res);
    for (int r = 0; r < 8; r++) {
      const float b = bias ? bias[row + r] : 0.0f;
      for (int j = 0; j < c; j++) out[(t + j) * n + row + r] = res[r][j] + b;
    }
  }
}

const bool g_has_avx512 = detect_avx512();
#else
const bool g_has_avx512 = false;
#endif

// Rows one at a time with the dot products of simd.h (AVX2 or scalar; same bits as the tiles).
template <typename W>
void rows_dot(const float* x, const W* w, const float* bias, int64_t tokens, int64_t k, int64_t n, int64_t rb,
              int64_t re, float* out) {
  int64_t t = 0;
  for (; t + 4 <= tokens; t += 4) {
    const float* xs[4] = {x + t * k, x + (t + 1) * k, x + (t + 2) * k, x + (t + 3) * k};
    for (int64_t j = rb; j < re; j++) {
      float r[4];
      simd::dot4(w + j * k, xs, k, r);
      const float b = bias ? bias[j] : 0.0f;
      for (int q = 0; q < 4; q++) out[(t + q) * n + j] = r[q] + b;
    }
  }
  for (; t < tokens; t++) {
    for (int64_t j = rb; j < re; j++) out[t * n + j] = simd::dot(w + j * k, x + t * k, k) + (bias ? bias[j] : 0.0f);
  }
}

template <typename W>
void matmul_rows_impl(const float* x, const W* w, const float* bias, int64_t tokens, int64_t k, int64_t n, int64_t rb,
                      int64_t re, float* out) {
#ifdef LM_X86
  if (avx512_active()) {
    int64_t j = rb;
    if constexpr (sizeof(W) == 2) {
      if (tokens >= kWidenFrom) {
        // Token blocks keep their x rows in L2 while every 8-row block of the item passes over them.
        thread_local std::vector<float> wide;
        wide.resize(static_cast<size_t>(8 * k));
        const int64_t full = rb + (re - rb) / 8 * 8;
        for (int64_t tb = 0; tb < tokens; tb += kTokenBlock) {
          const int64_t tn = std::min(kTokenBlock, tokens - tb);
          for (int64_t jb = rb; jb < full; jb += 8) {
            const float* rows[8];
            for (int r = 0; r < 8; r++) {
              simd::bf16_to_f32(w + (jb + r) * k, wide.data() + r * k, k);
              rows[r] = wide.data() + r * k;
            }
            block_avx512<float>(x + tb * k, rows, tn, k, n, jb, bias, out + tb * n);
          }
        }
        j = full;
      }
    }
    for (; j + 8 <= re; j += 8) {
      const W* rows[8];
      for (int r = 0; r < 8; r++) rows[r] = w + (j + r) * k;
      block_avx512<W>(x, rows, tokens, k, n, j, bias, out);
    }
    if (j < re) rows_dot(x, w, bias, tokens, k, n, j, re, out);
    return;
  }
#endif
  rows_dot(x, w, bias, tokens, k, n, rb, re, out);
}

}  // namespace

bool avx512_active() { return g_has_avx512 && simd::enabled(); }

void matmul_rows(const float* x, const float* w, const float* bias, int64_t tokens, int64_t k, int64_t n, int64_t rb,
                 int64_t re, float* out) {
  matmul_rows_impl(x, w, bias, tokens, k, n, rb, re, out);
}
void matmul_rows(const float* x, const uint16_t* w, const float* bias, int64_t tokens, int64_t k, int64_t n,
                 int64_t rb, int64_t re, float* out) {
  matmul_rows_impl(x, w, bias, tokens, k, n, rb, re, out);
}

}  // namespace lm::gemm
