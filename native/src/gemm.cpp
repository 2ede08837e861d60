// Matmul tiles. AVX-512 path: a tile is 8 weight rows × up to 6 tokens. A zmm register holds the
// 8 FMA lanes of two outputs (rows r and r+1 of one token), so each output keeps exactly the lane
// layout of the scalar/AVX2 dot product while one instruction does two outputs' work. Weight rows
// are loaded once per tile and reused for all its tokens; for prefill-sized batches a bf16 row
// block is widened to f32 once into a thread-local buffer and reused by every token tile.
// AVX2-only CPUs run R rows × C tokens tiles of 8-lane ymm accumulators (8 rows at decode; also
// the LoRA shrink/expand), and CPUs without AVX2 the scalar dot products; both give the same bits.
// The one-token LoRA expand on bf16 B (short rows) takes 16-row tiles that load whole 64-byte
// lines (expand16_bf16, AVX-512 BW), with the 8-row tile's lanes and order: the same bits.
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
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

// 64-byte aligned storage for the packed panels (aligned zmm loads).
template <typename T>
struct AlignedAlloc {
  using value_type = T;
  AlignedAlloc() = default;
  template <typename U>
  AlignedAlloc(const AlignedAlloc<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(64))); }
  void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t(64)); }
  bool operator==(const AlignedAlloc&) const { return true; }
  bool operator!=(const AlignedAlloc&) const { return false; }
};

bool g_packed = true;
// The short-row tile prefetch (the LoRA expand) and, on AVX-512, the LoRA tiles' prefetch at one
// input; LORAMESH_LORA_PREFETCH=0 turns them off for same-build comparisons. Same bits either way.
bool lora_prefetch_from_env() {
  const char* v = std::getenv("LORAMESH_LORA_PREFETCH");
  return v == nullptr || std::strcmp(v, "0") != 0;
}
bool g_prefetch = lora_prefetch_from_env();
// The AVX-512 decode GEMV's software prefetch (tile_prefetch); LORAMESH_GEMV_PREFETCH=0 turns it
// off, for same-process comparisons. Same bits either way.
bool gemv_prefetch_from_env() {
  const char* v = std::getenv("LORAMESH_GEMV_PREFETCH");
  return v == nullptr || std::strcmp(v, "0") != 0;
}
bool g_gemv_prefetch = gemv_prefetch_from_env();
// How far ahead of the line it reads tile_prefetch fetches each row, in bytes (default 2048;
// set_gemv_prefetch_bytes, for same-process comparisons of the distance).
std::atomic<int64_t> g_gemv_prefetch_bytes{2048};
// Instead, the next tile's rows (one contiguous block) in address order, one tile ahead
// (set_gemv_prefetch_seq).
std::atomic<bool> g_gemv_prefetch_seq{false};
bool g_short_far = false;

// bf16 to f32: the high half of the f32 bits.
inline float widen(float v) { return v; }
inline float widen(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

#ifdef LM_X86
#define LM_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
#define LM_AVX2 __attribute__((target("avx2,fma")))  // helpers shared by both paths use only AVX2

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

LM_AVX2 inline float hsum8(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s4 = _mm_add_ps(lo, hi);
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
  __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

LM_AVX2 inline float fma1(float a, float b, float c) {
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

// The decode tile (one token) with a software prefetch into L2 (T1) of each of its 8 rows
// g_gemv_prefetch_bytes (2 KB) ahead, running on into the next tile's rows (`next`, or none)
// near the end.
// The decode tile's prefetch for one cache-line step `line` (in elements of W): with `seq` the next
// tile's 8 rows, one contiguous block, 8 of its lines in address order; else each row `dist`
// elements ahead, running into the next tile's rows at the end. Hints only: no effect on the bits.
template <typename W>
inline void prefetch_tile_line(const W* const rows[8], const W* const* next, int64_t line, int64_t line_elems,
                               int64_t dist, int64_t k, bool seq) {
  const int64_t ahead = line + dist;
  if (seq) {
    if (next != nullptr) {
      const char* block = reinterpret_cast<const char*>(next[0]) + (line / line_elems) * 8 * 64;
      for (int q = 0; q < 8; q++) _mm_prefetch(block + q * 64, _MM_HINT_T1);
    }
  } else if (ahead < k) {
    for (int r = 0; r < 8; r++) _mm_prefetch(reinterpret_cast<const char*>(rows[r] + ahead), _MM_HINT_T1);
  } else if (next != nullptr && ahead - k < k) {
    for (int r = 0; r < 8; r++) _mm_prefetch(reinterpret_cast<const char*>(next[r] + (ahead - k)), _MM_HINT_T1);
  }
}

// With 4 KB pages the hardware streamers restart at every page of every row (a bf16 row at
// K = 2048 is one page), which left gate_up at 74 % of the probe on Zen 4; the prefetch reaches
// across. Same FMAs in the same order as tile<W, 1>, so the same bits.
template <typename W>
LM_AVX512 void tile_prefetch(const W* const rows[8], const W* const* next, const float* x, int64_t k,
                             float out[8][6]) {
  constexpr int64_t kLine = 64 / static_cast<int64_t>(sizeof(W));  // elements per cache line
  const int64_t dist = g_gemv_prefetch_bytes.load(std::memory_order_relaxed) / static_cast<int64_t>(sizeof(W));
  const bool seq = g_gemv_prefetch_seq.load(std::memory_order_relaxed);
  __m512 acc[4];
  for (int p = 0; p < 4; p++) acc[p] = _mm512_setzero_ps();
  const int64_t main = k & ~int64_t(7);
  for (int64_t line = 0; line < main; line += kLine) {
    prefetch_tile_line(rows, next, line, kLine, dist, k, seq);
    const int64_t end = std::min(main, line + kLine);
    for (int64_t i = line; i < end; i += 8) {
      const __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i));
      acc[0] = _mm512_fmadd_ps(pair(rows[0], rows[1], i), xv, acc[0]);
      acc[1] = _mm512_fmadd_ps(pair(rows[2], rows[3], i), xv, acc[1]);
      acc[2] = _mm512_fmadd_ps(pair(rows[4], rows[5], i), xv, acc[2]);
      acc[3] = _mm512_fmadd_ps(pair(rows[6], rows[7], i), xv, acc[3]);
    }
  }
  for (int p = 0; p < 4; p++) {
    out[2 * p][0] = hsum8(_mm512_castps512_ps256(acc[p]));
    out[2 * p + 1][0] = hsum8(_mm512_extractf32x8_ps(acc[p], 1));
  }
  for (int64_t i = main; i < k; i++) {
    for (int r = 0; r < 8; r++) out[r][0] = fma1(widen(rows[r][i]), x[i], out[r][0]);
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

// Packed panel: 8 weight rows widened to f32 and laid out in the order the tile reads them — per
// k step of 8, the four row pairs (r, r+1) as four contiguous zmm. One sequential stream of aligned
// loads instead of eight row streams with a shuffle per pair; the lanes are the same, so the bits are.
template <typename W>
LM_AVX512 void pack_panel(const W* const rows[8], int64_t steps, float* panel) {
  for (int64_t s = 0; s < steps; s++) {
    for (int q = 0; q < 4; q++) _mm512_store_ps(panel + s * 64 + q * 16, pair(rows[2 * q], rows[2 * q + 1], s * 8));
  }
}

// out[r][c] = row r · x[c] for the panel's 8 rows and C tokens: the same FMA lanes and reduction as
// tile(), the k tail (k % 8) from the original rows.
template <typename W, int C>
LM_AVX512 void panel_tile(const float* panel, const W* const rows[8], const float* const xs[C], int64_t k,
                          float out[8][6]) {
  __m512 acc[4][C];
  for (int q = 0; q < 4; q++)
    for (int c = 0; c < C; c++) acc[q][c] = _mm512_setzero_ps();
  const int64_t steps = k / 8;
  for (int64_t s = 0; s < steps; s++) {
    const float* w = panel + s * 64;
    const __m512 w0 = _mm512_load_ps(w), w1 = _mm512_load_ps(w + 16);
    const __m512 w2 = _mm512_load_ps(w + 32), w3 = _mm512_load_ps(w + 48);
    for (int c = 0; c < C; c++) {
      const __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(xs[c] + s * 8));
      acc[0][c] = _mm512_fmadd_ps(w0, xv, acc[0][c]);
      acc[1][c] = _mm512_fmadd_ps(w1, xv, acc[1][c]);
      acc[2][c] = _mm512_fmadd_ps(w2, xv, acc[2][c]);
      acc[3][c] = _mm512_fmadd_ps(w3, xv, acc[3][c]);
    }
  }
  for (int q = 0; q < 4; q++) {
    for (int c = 0; c < C; c++) {
      out[2 * q][c] = hsum8(_mm512_castps512_ps256(acc[q][c]));
      out[2 * q + 1][c] = hsum8(_mm512_extractf32x8_ps(acc[q][c], 1));
    }
  }
  for (int64_t i = steps * 8; i < k; i++) {
    for (int r = 0; r < 8; r++) {
      const float wi = widen(rows[r][i]);
      for (int c = 0; c < C; c++) out[r][c] = fma1(wi, xs[c][i], out[r][c]);
    }
  }
}

template <typename W>
LM_AVX512 void panel_tile_any(int c, const float* panel, const W* const rows[8], const float* const* xs, int64_t k,
                              float out[8][6]) {
  switch (c) {
    case 1: return panel_tile<W, 1>(panel, rows, xs, k, out);
    case 2: return panel_tile<W, 2>(panel, rows, xs, k, out);
    case 3: return panel_tile<W, 3>(panel, rows, xs, k, out);
    case 4: return panel_tile<W, 4>(panel, rows, xs, k, out);
    case 5: return panel_tile<W, 5>(panel, rows, xs, k, out);
    default: return panel_tile<W, 6>(panel, rows, xs, k, out);
  }
}

// Tokens per tile and the batch size from which row blocks are packed once and reused.
constexpr int64_t kTileTokens = 6;
constexpr int64_t kPackFrom = 12;

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

// Prefill-sized batches: each 8-row group is packed once, then every token tile runs over it.
template <typename W>
void block_packed(const float* x, const W* const rows[8], int64_t tokens, int64_t k, int64_t n, int64_t row,
                  const float* bias, float* out, float* panel) {
  pack_panel<W>(rows, k / 8, panel);
  for (int64_t t = 0; t < tokens; t += kTileTokens) {
    const int c = static_cast<int>(std::min(kTileTokens, tokens - t));
    const float* xs[kTileTokens];
    for (int j = 0; j < c; j++) xs[j] = x + (t + j) * k;
    float res[8][6];
    panel_tile_any<W>(c, panel, rows, xs, k, res);
    for (int r = 0; r < 8; r++) {
      const float b = bias ? bias[row + r] : 0.0f;
      for (int j = 0; j < c; j++) out[(t + j) * n + row + r] = res[r][j] + b;
    }
  }
}

// Row-pointer inputs, 8 weight rows × up to 6 inputs per tile (the LoRA shrink and expand).
template <typename W>
void block_ptrs(const float* const* xs, const W* const rows[8], int64_t tokens, int64_t k, float* out,
                int64_t out_stride) {
  for (int64_t t = 0; t < tokens; t += kTileTokens) {
    const int c = static_cast<int>(std::min(kTileTokens, tokens - t));
    float res[8][6];
    tile_any<W>(c, rows, xs + t, k, res);
    for (int j = 0; j < c; j++)
      for (int r = 0; r < 8; r++) out[(t + j) * out_stride + r] = res[r][j];
  }
}

const bool g_has_avx512 = detect_avx512();

// AVX2 tiles (CPUs without AVX-512): R weight rows × C tokens, one 8-lane ymm accumulator per
// output, so each output keeps simd::dot's lanes, reduction and tail (the same bits). Decode
// (C = 1) takes 8 rows at once: 8 independent FMA chains instead of one row's chain waiting on
// its own FMA latency, and 8 weight streams in flight.

LM_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
LM_AVX2 inline __m256 load8(const uint16_t* p) {
  const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
}

// Rows up to this long count as short for rows_avx2's prefetch.
constexpr int64_t kPrefetchRowBytes = 1024;
// How many tiles ahead it prefetches.
constexpr int64_t kPrefetchTiles = 2;

// Brings n elements from p towards L1, a line at a time.
template <typename W>
inline void prefetch_lines(const W* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(W));
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(c + off, _MM_HINT_T0);
}
// The same into L2 (the AVX-512 expand's far prefetch).
template <typename W>
inline void prefetch_lines_l2(const W* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(W));
  for (int64_t off = 0; off < bytes; off += 64) _mm_prefetch(c + off, _MM_HINT_T1);
}
// Tiles ahead for the AVX-512 short-row prefetch into L2 (set_short_prefetch_far). In a decode
// step with an r128 adapter it took the fused expand from 7.5–9.5 to 9.6–13 GB/s per thread in six
// alternated processes while the base rows slowed, −0.8 % a step on average; in four later ones
// neither the expand nor the step moved (issue 17, fourteenth pass). Off by default.
constexpr int64_t kFarPrefetchTiles = 8;

// The one-token LoRA expand on bf16 B rows (short: rank elements), 16 rows a tile. tile<W, 1>
// reads each row pair 16 bytes a row per k step (two loads, an insert, a widening and a shift per
// FMA), so all 32 lines of a 2 KB tile stay in use until the tile ends. Here each row's 64-byte line (32
// elements, four k steps) is one load, used up before the next; a word permute of a row pair's two
// lines puts two k steps of both rows in the even and odd words, and a shift or a mask makes each
// an f32 vector with exactly pair()'s lanes (row r's 8 elements, then row r+1's). The FMAs, their
// order per lane, the reduction (hsum8) and the k tail are tile<W, 1>'s: the same bits. One thread
// streaming 200 MB of r128 B from memory: 13–18 GB/s against the 8-row tile's 11–15; from L2 it is
// not faster (issue 17, nineteenth pass), so what it wins is in how the lines are read.
#define LM_AVX512BW __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma")))

bool detect_avx512bw() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512bw");
}
const bool g_has_avx512bw = detect_avx512bw();
bool g_expand16 = [] {
  const char* v = std::getenv("LORAMESH_LORA_EXPAND16");
  return v == nullptr || (std::strcmp(v, "0") != 0 && std::strcmp(v, "alt") != 0);
}();
// The bf16 decode tile with another widening and the same bits (LORAMESH_GEMV_UNPACK; issue 17,
// twenty-fourth pass): four rows' 8-element chunks in one zmm by 128-bit inserts, widened by
// unpacking with zeros (in-lane: no 512-bit cross-lane vpmovzxwd, no shift). Lane j of chunk r is
// row r's chain j (0-3 from unpacklo, 4-7 from unpackhi), x broadcast per 4 lanes, and each row's
// two halves rejoined for hsum8: every FMA and the reduction are tile_prefetch's. In L2 it is no
// faster (43.7 against 45.4 GB/s a thread) but held ~42 where the tile fell to ~34 in the rounds a
// vCPU lost part of its core (bench:core-share).
std::atomic<bool> g_gemv_unpack{false};

LM_AVX512BW inline __m512i chunks4(const uint16_t* const* rows, int64_t i) {
  __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[0] + i)));
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[1] + i)), 1);
  v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[2] + i)), 2);
  return _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(rows[3] + i)), 3);
}

LM_AVX512BW void tile_prefetch_unpack(const uint16_t* const rows[8], const uint16_t* const* next, const float* x,
                                      int64_t k, float out[8][6]) {
  constexpr int64_t kLine = 32;  // bf16 elements per cache line
  const int64_t dist = g_gemv_prefetch_bytes.load(std::memory_order_relaxed) / 2;
  const bool seq = g_gemv_prefetch_seq.load(std::memory_order_relaxed);
  const __m512i zero = _mm512_setzero_si512();
  __m512 a_lo = _mm512_setzero_ps(), a_hi = a_lo, b_lo = a_lo, b_hi = a_lo;
  const int64_t main = k & ~int64_t(7);
  for (int64_t line = 0; line < main; line += kLine) {
    prefetch_tile_line(rows, next, line, kLine, dist, k, seq);
    const int64_t end = std::min(main, line + kLine);
    for (int64_t i = line; i < end; i += 8) {
      const __m512 xl = _mm512_broadcast_f32x4(_mm_loadu_ps(x + i));
      const __m512 xh = _mm512_broadcast_f32x4(_mm_loadu_ps(x + i + 4));
      const __m512i va = chunks4(rows, i), vb = chunks4(rows + 4, i);
      a_lo = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, va)), xl, a_lo);
      a_hi = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, va)), xh, a_hi);
      b_lo = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(zero, vb)), xl, b_lo);
      b_hi = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(zero, vb)), xh, b_hi);
    }
  }
  alignas(64) float lo[2][16], hi[2][16];
  _mm512_store_ps(lo[0], a_lo);
  _mm512_store_ps(hi[0], a_hi);
  _mm512_store_ps(lo[1], b_lo);
  _mm512_store_ps(hi[1], b_hi);
  for (int r = 0; r < 8; r++) {
    const int h = r / 4, c = (r % 4) * 4;
    const __m256 v = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_load_ps(lo[h] + c)), _mm_load_ps(hi[h] + c), 1);
    out[r][0] = hsum8(v);
  }
  for (int64_t i = main; i < k; i++) {
    for (int r = 0; r < 8; r++) out[r][0] = fma1(widen(rows[r][i]), x[i], out[r][0]);
  }
}

// The bf16 decode GEMV in tiles of fewer rows (LORAMESH_GEMV_TILE; issue 17, twenty-fifth pass):
// P row pairs (2P = 2 or 4 contiguous rows), each pair one zmm of pair()'s lanes, so every FMA
// chain, its order and hsum8 are tile_prefetch's: the same bits. Fewer rows read at once (2P row
// streams a thread instead of 8): from memory (`core_share_bench gemv`, the engine's claims,
// per-round medians) 4 rows read 1.175× lm's 8-row tile in the VM's fast state and 1.033× in its
// slow one, 2 rows 1.191× and 1.003×; the 8-row tile with this prefetch only 1.029× / 1.017×, so it
// is the row count. In a decode step 4 rows beat 2 (issue 17, twenty-fifth pass).
// Prefetch in address order: during line step l, the 2P lines 2P·l… of the block `ahead` tiles
// on (about 16 KB past the tile), none at or past `end` (the claim's end).
std::atomic<int> g_gemv_tile{8};
constexpr int64_t kPairsAheadBytes = 16384;

template <int P>
LM_AVX512 void tile_pairs(const uint16_t* rows, int64_t k, const float* x, const char* end, float out[4]) {
  const int64_t tile_bytes = 2 * P * k * 2;
  const int64_t ahead = std::max<int64_t>(1, kPairsAheadBytes / tile_bytes);
  const char* next = reinterpret_cast<const char*>(rows) + ahead * tile_bytes;
  __m512 acc[P];
  for (int q = 0; q < P; q++) acc[q] = _mm512_setzero_ps();
  const int64_t main = k & ~int64_t(7);
  for (int64_t line = 0; line < main; line += 32) {
    const char* p = next + (line / 32) * (2 * P) * 64;
    for (int q = 0; q < 2 * P; q++)
      if (p + q * 64 < end) _mm_prefetch(p + q * 64, _MM_HINT_T1);
    const int64_t stop = std::min(main, line + 32);
    for (int64_t i = line; i < stop; i += 8) {
      const __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i));
      for (int q = 0; q < P; q++) acc[q] = _mm512_fmadd_ps(pair(rows + 2 * q * k, rows + (2 * q + 1) * k, i), xv, acc[q]);
    }
  }
  for (int q = 0; q < P; q++) {
    out[2 * q] = hsum8(_mm512_castps512_ps256(acc[q]));
    out[2 * q + 1] = hsum8(_mm512_extractf32x8_ps(acc[q], 1));
  }
  for (int64_t i = main; i < k; i++) {
    for (int r = 0; r < 2 * P; r++) out[r] = fma1(widen(rows[r * k + i]), x[i], out[r]);
  }
}

// The 4-row tile widened as tile_prefetch_unpack (one zmm of the 4 rows' 8-element chunks,
// in-lane unpacks with zeros, x broadcast per 4 lanes, each row's halves rejoined for hsum8): the
// same bits; with set_gemv_unpack on (the default) it replaces tile_pairs<2>. From memory it read
// 1.277× lm's 8-row tile in the fast state (t4u; 1.175× with pair()'s widening) and 1.039× in the
// slow one (`core_share_bench gemv`); in the decode step it took the 4-row step a further ~2.5 ms.
LM_AVX512BW void tile4_unpack(const uint16_t* rows, int64_t k, const float* x, const char* end, float out[4]) {
  const int64_t tile_bytes = 4 * k * 2;
  const int64_t ahead = std::max<int64_t>(1, kPairsAheadBytes / tile_bytes);
  const char* next = reinterpret_cast<const char*>(rows) + ahead * tile_bytes;
  const uint16_t* r[4] = {rows, rows + k, rows + 2 * k, rows + 3 * k};
  const __m512i zero = _mm512_setzero_si512();
  __m512 lo = _mm512_setzero_ps(), hi = lo;
  const int64_t main = k & ~int64_t(7);
  for (int64_t line = 0; line < main; line += 32) {
    const char* p = next + (line / 32) * 4 * 64;
    for (int q = 0; q < 4; q++)
      if (p + q * 64 < end) _mm_prefetch(p + q * 64, _MM_HINT_T1);
    const int64_t stop = std::min(main, line + 32);
    for (int64_t i = line; i < stop; i += 8) {
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
  for (int q = 0; q < 4; q++) {
    const __m256 v = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_load_ps(l + 4 * q)), _mm_load_ps(h + 4 * q), 1);
    out[q] = hsum8(v);
  }
  for (int64_t i = main; i < k; i++) {
    for (int q = 0; q < 4; q++) out[q] = fma1(widen(r[q][i]), x[i], out[q]);
  }
}

// Rows [j, re) of the one-token bf16 GEMV in 2P-row tiles; returns the first row not done.
template <int P>
int64_t pairs_rows(const float* x, const uint16_t* w, const float* bias, int64_t k, int64_t j, int64_t re,
                   float* out) {
  const char* end = reinterpret_cast<const char*>(w + re * k);
  const bool unpack = P == 2 && g_has_avx512bw && g_gemv_unpack.load(std::memory_order_relaxed);
  for (; j + 2 * P <= re; j += 2 * P) {
    float res[4];
    if (unpack) tile4_unpack(w + j * k, k, x, end, res);
    else tile_pairs<P>(w + j * k, k, x, end, res);
    for (int r = 0; r < 2 * P; r++) out[j + r] = res[r] + (bias ? bias[j + r] : 0.0f);
  }
  return j;
}

// 16-row tiles the expand prefetches ahead into L2 (16 KB at r128). In a one-thread read of 200 MB
// of B the distance (0 to 16 tiles, L1 or L2) did not change the rate; the tile's whole-line loads
// did (issue 17, nineteenth pass).
constexpr int64_t kExpand16Ahead = 4;

// The 16-row expand tile's end, shared by both load orders: the 8-element steps past the last whole
// line, each row pair's two reductions, then the k tail, every accumulator in expand16_bf16's order.
LM_AVX512BW __attribute__((always_inline)) inline void expand16_finish(const uint16_t* const rows[16], int64_t k,
                                                                        const float* x, int64_t done, __m512 acc[8],
                                                                        float out[16]) {
  const int64_t main = k & ~int64_t(7);
  for (int64_t i = done; i < main; i += 8) {
    const __m512 xv = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i));
    for (int p = 0; p < 8; p++) acc[p] = _mm512_fmadd_ps(pair(rows[2 * p], rows[2 * p + 1], i), xv, acc[p]);
  }
  for (int p = 0; p < 8; p++) {
    out[2 * p] = hsum8(_mm512_castps512_ps256(acc[p]));
    out[2 * p + 1] = hsum8(_mm512_extractf32x8_ps(acc[p], 1));
  }
  for (int64_t i = main; i < k; i++) {
    for (int r = 0; r < 16; r++) out[r] = fma1(widen(rows[r][i]), x[i], out[r]);
  }
}

// expand16_bf16's FMAs in another load order: G row pairs at a time over all their lines (G = 1:
// two rows' 4 lines each, 512 B of B at r128, then the next pair), instead of every pair per line
// (16 lines 256 B apart a step). Each accumulator still takes its FMAs line by line, x0..x3 within
// a line, then the 8-element steps: the same bits. In the r128 decode step (spans of B, 2 threads)
// one pair a group took 1.3–3.3 ms off the step in in-process pairs, two pairs ~0.8, four pairs
// added ~0.9 (issue 17, twenty-fifth pass B). set_expand_grouped(G); 0 = expand16_bf16.
std::atomic<int> g_expand_grouped{0};

template <int G>
LM_AVX512BW void expand16_grouped(const uint16_t* const rows[16], int64_t k, const float* x, float out[16]) {
  alignas(64) static const uint16_t kIdx[2][32] = {
      {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 32, 40, 33, 41, 34, 42, 35, 43, 36, 44, 37, 45, 38, 46, 39, 47},
      {16, 24, 17, 25, 18, 26, 19, 27, 20, 28, 21, 29, 22, 30, 23, 31,
       48, 56, 49, 57, 50, 58, 51, 59, 52, 60, 53, 61, 54, 62, 55, 63}};
  const __m512i idx0 = _mm512_load_si512(kIdx[0]), idx1 = _mm512_load_si512(kIdx[1]);
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m512 acc[8];
  for (int p = 0; p < 8; p++) acc[p] = _mm512_setzero_ps();
  const int64_t lines = k / 32;
  for (int g = 0; g < 8; g += G) {
    __m512 c[G];
    for (int q = 0; q < G; q++) c[q] = acc[g + q];
    for (int64_t l = 0; l < lines; l++) {
      const int64_t i = l * 32;
      const __m512 x0 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i));
      const __m512 x1 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i + 8));
      const __m512 x2 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i + 16));
      const __m512 x3 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i + 24));
      __m512i lo[G], hi[G];
      for (int q = 0; q < G; q++) {
        const __m512i a = _mm512_loadu_si512(rows[2 * (g + q)] + i), b = _mm512_loadu_si512(rows[2 * (g + q) + 1] + i);
        lo[q] = _mm512_permutex2var_epi16(a, idx0, b);
        hi[q] = _mm512_permutex2var_epi16(a, idx1, b);
      }
      for (int q = 0; q < G; q++) c[q] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(lo[q], 16)), x0, c[q]);
      for (int q = 0; q < G; q++) c[q] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(lo[q], high)), x1, c[q]);
      for (int q = 0; q < G; q++) c[q] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(hi[q], 16)), x2, c[q]);
      for (int q = 0; q < G; q++) c[q] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(hi[q], high)), x3, c[q]);
    }
    for (int q = 0; q < G; q++) acc[g + q] = c[q];
  }
  expand16_finish(rows, k, x, lines * 32, acc, out);
}

LM_AVX512BW void expand16_bf16(const uint16_t* const rows[16], int64_t k, const float* x, float out[16]) {
  // Word 2i + e of a permuted pair (i < 8: row r, else row r+1; element (i & 7)) for the steps
  // 2g + e of a 32-element line: index bit 5 picks the second row's line.
  alignas(64) static const uint16_t kIdx[2][32] = {
      {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15, 32, 40, 33, 41, 34, 42, 35, 43, 36, 44, 37, 45, 38, 46, 39, 47},
      {16, 24, 17, 25, 18, 26, 19, 27, 20, 28, 21, 29, 22, 30, 23, 31,
       48, 56, 49, 57, 50, 58, 51, 59, 52, 60, 53, 61, 54, 62, 55, 63}};
  const __m512i idx0 = _mm512_load_si512(kIdx[0]), idx1 = _mm512_load_si512(kIdx[1]);
  const __m512i high = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m512 acc[8];
  for (int p = 0; p < 8; p++) acc[p] = _mm512_setzero_ps();
  const int64_t lines = k / 32;
  for (int64_t l = 0; l < lines; l++) {
    const int64_t i = l * 32;
    const __m512 x0 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i));
    const __m512 x1 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i + 8));
    const __m512 x2 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i + 16));
    const __m512 x3 = _mm512_broadcast_f32x8(_mm256_loadu_ps(x + i + 24));
    for (int p = 0; p < 8; p++) {
      const __m512i a = _mm512_loadu_si512(rows[2 * p] + i), b = _mm512_loadu_si512(rows[2 * p + 1] + i);
      const __m512i lo = _mm512_permutex2var_epi16(a, idx0, b), hi = _mm512_permutex2var_epi16(a, idx1, b);
      acc[p] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(lo, 16)), x0, acc[p]);
      acc[p] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(lo, high)), x1, acc[p]);
      acc[p] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(hi, 16)), x2, acc[p]);
      acc[p] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(hi, high)), x3, acc[p]);
    }
  }
  expand16_finish(rows, k, x, lines * 32, acc, out);
}

// Rows [j, re) in 16-row tiles for one input; returns the first row not done. B's rows are
// contiguous ([width, rank]), so the tiles ahead are one run of lines.
int64_t expand16_rows(const float* x, const uint16_t* w, int64_t k, int64_t j, int64_t re, float* out, int64_t rb) {
  const int64_t tiles = (re - j) / 16;
  const int64_t tile_elems = 16 * k;
  const uint16_t* first = w + j * k;
  const int grouped = g_expand_grouped.load(std::memory_order_relaxed);
  prefetch_lines_l2(first, std::min(tiles, kExpand16Ahead) * tile_elems);
  for (int64_t t = 0; t < tiles; t++) {
    if (t + kExpand16Ahead < tiles) prefetch_lines_l2(first + (t + kExpand16Ahead) * tile_elems, tile_elems);
    const uint16_t* rows[16];
    for (int r = 0; r < 16; r++) rows[r] = first + (t * 16 + r) * k;
    float res[16];
    switch (grouped) {
      case 1: expand16_grouped<1>(rows, k, x, res); break;
      case 2: expand16_grouped<2>(rows, k, x, res); break;
      case 4: expand16_grouped<4>(rows, k, x, res); break;
      default: expand16_bf16(rows, k, x, res);
    }
    for (int r = 0; r < 16; r++) out[j + t * 16 + r - rb] = res[r];
  }
  return j + tiles * 16;
}

template <typename W, int R, int C>
LM_AVX2 void tile_avx2(const W* w, int64_t k, const float* const* xs, float out[8][6]) {
  __m256 acc[R][C];
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) acc[r][c] = _mm256_setzero_ps();
  const int64_t main = k & ~int64_t(7);
  for (int64_t i = 0; i < main; i += 8) {
    __m256 wv[R];
    for (int r = 0; r < R; r++) wv[r] = load8(w + r * k + i);
    for (int c = 0; c < C; c++) {
      const __m256 xv = _mm256_loadu_ps(xs[c] + i);
      for (int r = 0; r < R; r++) acc[r][c] = _mm256_fmadd_ps(wv[r], xv, acc[r][c]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int c = 0; c < C; c++) out[r][c] = hsum8(acc[r][c]);
  for (int64_t i = main; i < k; i++) {
    for (int r = 0; r < R; r++) {
      const float wi = widen(w[r * k + i]);
      for (int c = 0; c < C; c++) out[r][c] = fma1(wi, xs[c][i], out[r][c]);
    }
  }
}

// Rows [rb, re) for the C inputs xs: R-row tiles, then single rows. Row j of input c goes to
// out[c * stride + j - col0] (out starts at the first input).
template <typename W, int R, int C>
void rows_avx2(const float* const* xs, const W* w, const float* bias, int64_t k, int64_t rb, int64_t re, float* out,
               int64_t stride, int64_t col0) {
  float res[8][6];
  int64_t j = rb;
  auto emit = [&](int rows) {
    for (int r = 0; r < rows; r++) {
      const float b = bias ? bias[j + r] : 0.0f;
      for (int c = 0; c < C; c++) out[c * stride + j + r - col0] = res[r][c] + b;
    }
  };
  // Short rows (the LoRA expand: rank floats each) make a tile one 4 KB page or less, too short for
  // the hardware prefetcher to ramp up before the tile moves on; each tile then starts on cold
  // misses. Prefetch the next tile's lines while this one runs.
  const bool prefetch = g_prefetch && k * static_cast<int64_t>(sizeof(W)) <= kPrefetchRowBytes;
  if (prefetch) prefetch_lines(w + j * k, std::min<int64_t>(kPrefetchTiles * R, re - j) * k);
  for (; j + R <= re; j += R) {
    const int64_t ahead = j + kPrefetchTiles * R;
    if (prefetch && ahead < re) prefetch_lines(w + ahead * k, std::min<int64_t>(R, re - ahead) * k);
    tile_avx2<W, R, C>(w + j * k, k, xs, res);
    emit(R);
  }
  for (; j < re; j++) {
    tile_avx2<W, 1, C>(w + j * k, k, xs, res);
    emit(1);
  }
}

// Inputs in groups of 6 on 2-row tiles (12 accumulators: the ymm file's limit); the rest on a
// tile with at least 8 accumulators. out[t * stride + j - col0] for input t and row j.
template <typename W>
void matmul_avx2(const float* const* xs, const W* w, const float* bias, int64_t tokens, int64_t k, int64_t rb,
                 int64_t re, float* out, int64_t stride, int64_t col0) {
  int64_t t = 0;
  for (; t + 6 <= tokens; t += 6) rows_avx2<W, 2, 6>(xs + t, w, bias, k, rb, re, out + t * stride, stride, col0);
  const float* const* rest = xs + t;
  float* o = out + t * stride;
  switch (tokens - t) {
    case 1: return rows_avx2<W, 8, 1>(rest, w, bias, k, rb, re, o, stride, col0);
    case 2: return rows_avx2<W, 4, 2>(rest, w, bias, k, rb, re, o, stride, col0);
    case 3: return rows_avx2<W, 3, 3>(rest, w, bias, k, rb, re, o, stride, col0);
    case 4: return rows_avx2<W, 2, 4>(rest, w, bias, k, rb, re, o, stride, col0);
    case 5: return rows_avx2<W, 2, 5>(rest, w, bias, k, rb, re, o, stride, col0);
    default: return;
  }
}

// k-major LoRA expand (see gemm.h). One input: acc[n] = fma(h[j], Bᵀ[j][n], acc[n]) over Bᵀ's rows,
// each a contiguous stream of the block's columns (a long run the hardware prefetcher follows),
// the accumulators in L1; row j + 2 is prefetched while row j runs.
// k-major LoRA expand (see gemm.h) for R inputs (1 or 2): out_r[n] = fma(h_r[j], Bᵀ[j][n], out_r[n])
// over Bᵀ's rows four at a time. Each row is a contiguous run of the block's columns and four runs
// are in flight at once, which keeps the memory system busier than one run per page (measured:
// one row at a time, with or without a software prefetch, was slower than B's own layout). Each
// loaded Bᵀ vector serves the R inputs; the accumulators stay in L1.
template <typename W, int R>
LM_AVX2 void kmajor_rows(const float* const* hs, const W* bt, int64_t k, int64_t n_total, int64_t cb, int64_t ce,
                         float* out, int64_t stride) {
  const int64_t width = ce - cb;
  const int64_t main = width & ~int64_t(7);
  for (int r = 0; r < R; r++) std::fill(out + r * stride, out + r * stride + width, 0.0f);
  int64_t j = 0;
  for (; j + 4 <= k; j += 4) {
    const W* b[4];
    __m256 s[R][4];
    for (int q = 0; q < 4; q++) {
      b[q] = bt + (j + q) * n_total + cb;
      for (int r = 0; r < R; r++) s[r][q] = _mm256_set1_ps(hs[r][j + q]);
    }
    int64_t n = 0;
    for (; n < main; n += 8) {
      const __m256 b0 = load8(b[0] + n), b1 = load8(b[1] + n), b2 = load8(b[2] + n), b3 = load8(b[3] + n);
      for (int r = 0; r < R; r++) {
        float* o = out + r * stride + n;
        __m256 a = _mm256_loadu_ps(o);
        a = _mm256_fmadd_ps(s[r][0], b0, a);
        a = _mm256_fmadd_ps(s[r][1], b1, a);
        a = _mm256_fmadd_ps(s[r][2], b2, a);
        a = _mm256_fmadd_ps(s[r][3], b3, a);
        _mm256_storeu_ps(o, a);
      }
    }
    for (; n < width; n++) {
      for (int r = 0; r < R; r++) {
        float a = out[r * stride + n];
        for (int q = 0; q < 4; q++) a = fma1(hs[r][j + q], widen(b[q][n]), a);
        out[r * stride + n] = a;
      }
    }
  }
  for (; j < k; j++) {
    const W* row = bt + j * n_total + cb;
    for (int r = 0; r < R; r++) {
      float* o = out + r * stride;
      const __m256 sv = _mm256_set1_ps(hs[r][j]);
      int64_t n = 0;
      for (; n < main; n += 8) _mm256_storeu_ps(o + n, _mm256_fmadd_ps(sv, load8(row + n), _mm256_loadu_ps(o + n)));
      for (; n < width; n++) o[n] = fma1(hs[r][j], widen(row[n]), o[n]);
    }
  }
}

template <typename W>
void kmajor_avx2(const float* const* hs, const W* bt, int64_t tokens, int64_t k, int64_t n_total, int64_t cb,
                 int64_t ce, float* out, int64_t stride) {
  int64_t t = 0;
  for (; t + 2 <= tokens; t += 2) kmajor_rows<W, 2>(hs + t, bt, k, n_total, cb, ce, out + t * stride, stride);
  if (t < tokens) kmajor_rows<W, 1>(hs + t, bt, k, n_total, cb, ce, out + t * stride, stride);
}
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
    const int64_t full = rb + (re - rb) / 8 * 8;
    if (tokens >= kPackFrom && g_packed && full > rb) {
      thread_local std::vector<float, AlignedAlloc<float>> panel;
      panel.resize(static_cast<size_t>(8 * k + 16));
      for (; j < full; j += 8) {
        const W* rows[8];
        for (int r = 0; r < 8; r++) rows[r] = w + (j + r) * k;
        block_packed<W>(x, rows, tokens, k, n, j, bias, out, panel.data());
      }
    }
    if (tokens == 1 && g_gemv_prefetch) {
      if constexpr (std::is_same_v<W, uint16_t>) {
        const int tile_rows = g_gemv_tile.load(std::memory_order_relaxed);
        if (tile_rows == 4) j = pairs_rows<2>(x, w, bias, k, j, re, out);
        else if (tile_rows == 2) j = pairs_rows<1>(x, w, bias, k, j, re, out);
      }
      for (; j + 8 <= re; j += 8) {
        const W* rows[8];
        const W* next[8];
        for (int r = 0; r < 8; r++) rows[r] = w + (j + r) * k;
        for (int r = 0; r < 8; r++) next[r] = w + (j + 8 + r) * k;
        float res[8][6];
        if constexpr (std::is_same_v<W, uint16_t>) {
          if (g_has_avx512bw && g_gemv_unpack.load(std::memory_order_relaxed))
            tile_prefetch_unpack(rows, j + 16 <= re ? next : nullptr, x, k, res);
          else
            tile_prefetch<W>(rows, j + 16 <= re ? next : nullptr, x, k, res);
        } else {
          tile_prefetch<W>(rows, j + 16 <= re ? next : nullptr, x, k, res);
        }
        for (int r = 0; r < 8; r++) out[j + r] = res[r][0] + (bias ? bias[j + r] : 0.0f);
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
  if (simd::enabled()) {
    thread_local std::vector<const float*> xs;
    xs.resize(static_cast<size_t>(tokens));
    for (int64_t t = 0; t < tokens; t++) xs[static_cast<size_t>(t)] = x + t * k;
    return matmul_avx2(xs.data(), w, bias, tokens, k, rb, re, out, n, 0);
  }
#endif
  rows_dot(x, w, bias, tokens, k, n, rb, re, out);
}

template <typename W>
void rows_ptr_impl(const float* const* xs, const W* w, int64_t tokens, int64_t k, int64_t rb, int64_t re, float* out,
                   int64_t stride) {
  int64_t j = rb;
#ifdef LM_X86
  if (avx512_active()) {
    const int64_t row_bytes = k * static_cast<int64_t>(sizeof(W));
    if (tokens == 1 && g_prefetch && row_bytes > kPrefetchRowBytes) {
      // One input, long rows (the LoRA shrink: A's rows are h_in long): the decode GEMV's tile with
      // its prefetch (same FMAs and order as tile<W, 1>, so the same bits).
      for (; j + 8 <= re; j += 8) {
        const W* rows[8];
        const W* next[8];
        for (int r = 0; r < 8; r++) rows[r] = w + (j + r) * k;
        for (int r = 0; r < 8; r++) next[r] = w + (j + 8 + r) * k;
        float res[8][6];
        tile_prefetch<W>(rows, j + 16 <= re ? next : nullptr, xs[0], k, res);
        for (int r = 0; r < 8; r++) out[j + r - rb] = res[r][0];
      }
    }
    if constexpr (std::is_same_v<W, uint16_t>) {
      if (tokens == 1 && g_expand16 && g_has_avx512bw && row_bytes <= kPrefetchRowBytes && k >= 32)
        j = expand16_rows(xs[0], w, k, j, re, out, rb);
    }
    // Short rows (the LoRA expand: B's rows are rank long) make a tile 2 KB or less: prefetch the
    // tiles two ahead, as the AVX2 path does (rows_avx2).
    const bool short_prefetch = g_prefetch && row_bytes <= kPrefetchRowBytes;
    const bool far = g_short_far;
    const int64_t tiles_ahead = far ? kFarPrefetchTiles : kPrefetchTiles;
    auto fetch = [far](const W* p, int64_t count) { far ? prefetch_lines_l2(p, count) : prefetch_lines(p, count); };
    if (short_prefetch && j < re) fetch(w + j * k, std::min<int64_t>(tiles_ahead * 8, re - j) * k);
    for (; j + 8 <= re; j += 8) {
      const int64_t ahead = j + tiles_ahead * 8;
      if (short_prefetch && ahead < re) fetch(w + ahead * k, std::min<int64_t>(8, re - ahead) * k);
      const W* rows[8];
      for (int r = 0; r < 8; r++) rows[r] = w + (j + r) * k;
      block_ptrs<W>(xs, rows, tokens, k, out + (j - rb), stride);
    }
  } else if (simd::enabled()) {
    return matmul_avx2(xs, w, nullptr, tokens, k, rb, re, out, stride, rb);  // row j at out[j - rb]
  }
#endif
  for (; j < re; j++) {
    const W* row = w + j * k;
    int64_t t = 0;
    for (; t + 4 <= tokens; t += 4) {
      float r[4];
      simd::dot4(row, xs + t, k, r);
      for (int q = 0; q < 4; q++) out[(t + q) * stride + (j - rb)] = r[q];
    }
    for (; t < tokens; t++) out[t * stride + (j - rb)] = simd::dot(row, xs[t], k);
  }
}


template <typename W>
void kmajor_impl(const float* const* hs, const W* bt, int64_t tokens, int64_t k, int64_t n_total, int64_t cb,
                 int64_t ce, float* out, int64_t stride) {
#ifdef LM_X86
  if (simd::enabled()) return kmajor_avx2(hs, bt, tokens, k, n_total, cb, ce, out, stride);
#endif
  // std::fma rounds once, as the FMA instructions do: the same bits.
  for (int64_t t = 0; t < tokens; t++) {
    float* o = out + t * stride;
    std::fill(o, o + (ce - cb), 0.0f);
    for (int64_t j = 0; j < k; j++) {
      const float s = hs[t][j];
      const W* row = bt + j * n_total;
      for (int64_t n = cb; n < ce; n++) o[n - cb] = std::fma(s, widen(row[n]), o[n - cb]);
    }
  }
}

}  // namespace

bool avx512_active() { return g_has_avx512 && simd::enabled(); }
void set_packed(bool on) { g_packed = on; }
void set_prefetch(bool on) { g_prefetch = on; }
void set_gemv_prefetch(bool on) { g_gemv_prefetch = on; }
void set_gemv_unpack(bool on) { g_gemv_unpack.store(on, std::memory_order_relaxed); }
void set_gemv_tile(int rows) {
#ifdef LM_X86
  g_gemv_tile.store(rows == 2 || rows == 4 ? rows : 8, std::memory_order_relaxed);
#else
  (void)rows;
#endif
}
void set_gemv_prefetch_seq(bool on) { g_gemv_prefetch_seq.store(on, std::memory_order_relaxed); }
void set_gemv_prefetch_bytes(int64_t bytes) {
  g_gemv_prefetch_bytes.store(std::max<int64_t>(64, bytes / 64 * 64), std::memory_order_relaxed);
}
void set_short_prefetch_far(bool on) { g_short_far = on; }
void set_expand_grouped(int pairs) { g_expand_grouped.store(pairs, std::memory_order_relaxed); }
void set_expand16(bool on) {
#ifdef LM_X86
  g_expand16 = on;
#else
  (void)on;
#endif
}

void matmul_rows(const float* x, const float* w, const float* bias, int64_t tokens, int64_t k, int64_t n, int64_t rb,
                 int64_t re, float* out) {
  matmul_rows_impl(x, w, bias, tokens, k, n, rb, re, out);
}
void matmul_rows(const float* x, const uint16_t* w, const float* bias, int64_t tokens, int64_t k, int64_t n,
                 int64_t rb, int64_t re, float* out) {
  matmul_rows_impl(x, w, bias, tokens, k, n, rb, re, out);
}

void matmul_rows_ptr(const float* const* xs, const float* w, int64_t tokens, int64_t k, int64_t rb, int64_t re,
                     float* out, int64_t out_stride) {
  rows_ptr_impl(xs, w, tokens, k, rb, re, out, out_stride);
}
void matmul_rows_ptr(const float* const* xs, const uint16_t* w, int64_t tokens, int64_t k, int64_t rb, int64_t re,
                     float* out, int64_t out_stride) {
  rows_ptr_impl(xs, w, tokens, k, rb, re, out, out_stride);
}

void matmul_kmajor(const float* const* hs, const float* bt, int64_t tokens, int64_t k, int64_t n_total, int64_t cb,
                   int64_t ce, float* out, int64_t out_stride) {
  kmajor_impl(hs, bt, tokens, k, n_total, cb, ce, out, out_stride);
}
void matmul_kmajor(const float* const* hs, const uint16_t* bt, int64_t tokens, int64_t k, int64_t n_total,
                   int64_t cb, int64_t ce, float* out, int64_t out_stride) {
  kmajor_impl(hs, bt, tokens, k, n_total, cb, ce, out, out_stride);
}

}  // namespace lm::gemm
