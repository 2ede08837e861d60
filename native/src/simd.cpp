#include "simd.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define LM_X86 1
#endif

namespace lm::simd {

namespace {

inline float bf(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline float ld(const float* p, int64_t i) { return p[i]; }
inline float ld(const uint16_t* p, int64_t i) { return bf(p[i]); }

inline float reduce8(const float l[8]) {
  return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

template <typename W>
float dot_scalar(const W* w, const float* x, int64_t n) {
  float lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t main = n & ~int64_t(7);
  for (int64_t i = 0; i < main; i += 8) {
    for (int j = 0; j < 8; j++) lanes[j] = std::fma(ld(w, i + j), x[i + j], lanes[j]);
  }
  float acc = reduce8(lanes);
  for (int64_t i = main; i < n; i++) acc = std::fma(ld(w, i), x[i], acc);
  return acc;
}

// e^x as Cephes' expf: x = n·ln2 + r with |r| <= ln2/2 (ln 2 split in two for an exact n·ln2),
// e^r by a degree-6 polynomial, 2^n put into the exponent.
constexpr float kExpHi = 88.7228f, kExpLo = -87.3365f, kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f, kLn2Lo = -2.12194440e-4f;
constexpr float kP0 = 1.9875691500e-4f, kP1 = 1.3981999507e-3f, kP2 = 8.3334519073e-3f, kP3 = 4.1665795894e-2f,
                kP4 = 1.6666665459e-1f, kP5 = 5.0000001201e-1f;

inline float exp_scalar(float x) {
  if (std::isnan(x)) return x;
  x = std::min(std::max(x, kExpLo), kExpHi);
  const float n = std::nearbyint(x * kLog2e);
  float r = std::fma(n, -kLn2Hi, x);
  r = std::fma(n, -kLn2Lo, r);
  float p = kP0;
  p = std::fma(p, r, kP1);
  p = std::fma(p, r, kP2);
  p = std::fma(p, r, kP3);
  p = std::fma(p, r, kP4);
  p = std::fma(p, r, kP5);
  const float y = std::fma(p, r * r, r) + 1.0f;
  // n in [-126, 128]: 2^n itself may be denormal or overflow, so scale by two normal halves.
  const int32_t ni = static_cast<int32_t>(n), n1 = ni >> 1, n2 = ni - n1;
  const uint32_t b1 = static_cast<uint32_t>(n1 + 127) << 23, b2 = static_cast<uint32_t>(n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, 4);
  std::memcpy(&s2, &b2, 4);
  return y * s1 * s2;
}

#ifdef LM_X86
__attribute__((target("avx2,fma"))) void exp_avx2(const float* x, float* y, int64_t n) {
  const __m256 hi = _mm256_set1_ps(kExpHi), lo = _mm256_set1_ps(kExpLo), log2e = _mm256_set1_ps(kLog2e);
  const __m256 c1 = _mm256_set1_ps(-kLn2Hi), c2 = _mm256_set1_ps(-kLn2Lo), one = _mm256_set1_ps(1.0f);
  const __m256i bias = _mm256_set1_epi32(127);
  int64_t main = n & ~int64_t(7);
  for (int64_t i = 0; i < main; i += 8) {
    // Operand order keeps a NaN (max/min return their second operand when one is NaN).
    __m256 v = _mm256_min_ps(hi, _mm256_max_ps(lo, _mm256_loadu_ps(x + i)));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(v, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(k, c1, v);
    r = _mm256_fmadd_ps(k, c2, r);
    __m256 p = _mm256_set1_ps(kP0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP5));
    const __m256 q = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), one);
    const __m256i ni = _mm256_cvtps_epi32(k), n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i b1 = _mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23);
    const __m256i b2 = _mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_mul_ps(q, _mm256_castsi256_ps(b1)), _mm256_castsi256_ps(b2)));
  }
  for (int64_t i = main; i < n; i++) y[i] = exp_scalar(x[i]);
}

__attribute__((target("avx2,fma"))) inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
__attribute__((target("avx2,fma"))) inline __m256 load8(const uint16_t* p) {
  __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
}
__attribute__((target("avx2,fma"))) inline float hsum(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  __m128 s4 = _mm_add_ps(lo, hi);                 // l[i] + l[i+4]
  __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));  // s4[i] + s4[i+2]
  __m128 s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
  return _mm_cvtss_f32(s1);
}

template <typename W>
__attribute__((target("avx2,fma"))) float dot_avx2(const W* w, const float* x, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t main = n & ~int64_t(7);
  for (int64_t i = 0; i < main; i += 8) acc = _mm256_fmadd_ps(load8(w + i), _mm256_loadu_ps(x + i), acc);
  float s = hsum(acc);
  for (int64_t i = main; i < n; i++) s = std::fma(ld(w, i), x[i], s);
  return s;
}

template <typename W>
__attribute__((target("avx2,fma"))) void dot4_avx2(const W* w, const float* const x[4], int64_t n, float out[4]) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t main = n & ~int64_t(7);
  for (int64_t i = 0; i < main; i += 8) {
    __m256 wv = load8(w + i);
    a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[0] + i), a0);
    a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[1] + i), a1);
    a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[2] + i), a2);
    a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x[3] + i), a3);
  }
  float s[4] = {hsum(a0), hsum(a1), hsum(a2), hsum(a3)};
  for (int64_t i = main; i < n; i++) {
    float wi = ld(w, i);
    for (int j = 0; j < 4; j++) s[j] = std::fma(wi, x[j][i], s[j]);
  }
  for (int j = 0; j < 4; j++) out[j] = s[j];
}

__attribute__((target("avx2,fma"))) void bf16_to_f32_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t main = n & ~int64_t(7);
  for (int64_t i = 0; i < main; i += 8) _mm256_storeu_ps(dst + i, load8(src + i));
  for (int64_t i = main; i < n; i++) dst[i] = bf(src[i]);
}

__attribute__((target("avx2,fma"))) void axpy_avx2(float a, const float* x, float* y, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t main = n & ~int64_t(7);
  for (int64_t i = 0; i < main; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (int64_t i = main; i < n; i++) y[i] = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(x[i]), _mm_set_ss(y[i])));
}

// 32 floats of y at a time stay in four registers while every row is added; the tail as axpy's.
__attribute__((target("avx2,fma"))) void axpy_rows_avx2(const float* a, const float* const* rows, int64_t count,
                                                        float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256 y0 = _mm256_loadu_ps(y + i), y1 = _mm256_loadu_ps(y + i + 8), y2 = _mm256_loadu_ps(y + i + 16),
           y3 = _mm256_loadu_ps(y + i + 24);
    for (int64_t p = 0; p < count; p++) {
      const __m256 av = _mm256_set1_ps(a[p]);
      const float* x = rows[p] + i;
      y0 = _mm256_fmadd_ps(av, _mm256_loadu_ps(x), y0);
      y1 = _mm256_fmadd_ps(av, _mm256_loadu_ps(x + 8), y1);
      y2 = _mm256_fmadd_ps(av, _mm256_loadu_ps(x + 16), y2);
      y3 = _mm256_fmadd_ps(av, _mm256_loadu_ps(x + 24), y3);
    }
    _mm256_storeu_ps(y + i, y0);
    _mm256_storeu_ps(y + i + 8, y1);
    _mm256_storeu_ps(y + i + 16, y2);
    _mm256_storeu_ps(y + i + 24, y3);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 y0 = _mm256_loadu_ps(y + i);
    for (int64_t p = 0; p < count; p++) y0 = _mm256_fmadd_ps(_mm256_set1_ps(a[p]), _mm256_loadu_ps(rows[p] + i), y0);
    _mm256_storeu_ps(y + i, y0);
  }
  for (; i < n; i++) {
    float v = y[i];
    for (int64_t p = 0; p < count; p++) v = _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a[p]), _mm_set_ss(rows[p][i]), _mm_set_ss(v)));
    y[i] = v;
  }
}

bool detect() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
bool detect() { return false; }
#endif

bool g_enabled = detect();

}  // namespace

bool cpu_has_avx2() {
  static const bool has = detect();
  return has;
}
bool enabled() { return g_enabled; }
void set_enabled(bool on) { g_enabled = on && cpu_has_avx2(); }

#ifdef LM_X86
#define LM_DISPATCH(avx, scalar) return g_enabled ? (avx) : (scalar)
#else
#define LM_DISPATCH(avx, scalar) return (scalar)
#endif

float dot(const float* w, const float* x, int64_t n) { LM_DISPATCH(dot_avx2(w, x, n), dot_scalar(w, x, n)); }
float dot(const uint16_t* w, const float* x, int64_t n) { LM_DISPATCH(dot_avx2(w, x, n), dot_scalar(w, x, n)); }

void dot4(const float* w, const float* const x[4], int64_t n, float out[4]) {
#ifdef LM_X86
  if (g_enabled) return dot4_avx2(w, x, n, out);
#endif
  for (int j = 0; j < 4; j++) out[j] = dot_scalar(w, x[j], n);
}
void dot4(const uint16_t* w, const float* const x[4], int64_t n, float out[4]) {
#ifdef LM_X86
  if (g_enabled) return dot4_avx2(w, x, n, out);
#endif
  for (int j = 0; j < 4; j++) out[j] = dot_scalar(w, x[j], n);
}

void axpy(float a, const float* x, float* y, int64_t n) {
#ifdef LM_X86
  if (g_enabled) return axpy_avx2(a, x, y, n);
#endif
  for (int64_t i = 0; i < n; i++) y[i] = std::fma(a, x[i], y[i]);
}

void axpy_rows(const float* a, const float* const* rows, int64_t count, float* y, int64_t n) {
#ifdef LM_X86
  if (g_enabled) return axpy_rows_avx2(a, rows, count, y, n);
#endif
  for (int64_t p = 0; p < count; p++)
    for (int64_t i = 0; i < n; i++) y[i] = std::fma(a[p], rows[p][i], y[i]);
}

void exp(const float* x, float* y, int64_t n) {
#ifdef LM_X86
  if (g_enabled) return exp_avx2(x, y, n);
#endif
  for (int64_t i = 0; i < n; i++) y[i] = exp_scalar(x[i]);
}

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
#ifdef LM_X86
  if (g_enabled) return bf16_to_f32_avx2(src, dst, n);
#endif
  for (int64_t i = 0; i < n; i++) dst[i] = bf(src[i]);
}

}  // namespace lm::simd
