// Dot products with a fixed reduction order: 8 lane accumulators advanced with fused multiply-add,
// reduced as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), then the tail added in order. The AVX2 path and
// the scalar fallback follow the same order with the same FMA rounding, so they give the same bits.
#pragma once

#include <cstdint>

namespace lm::simd {

// True when this CPU has AVX2 and FMA.
bool cpu_has_avx2();
// Whether the AVX2 path is used (defaults to cpu_has_avx2(); tests can force the scalar path).
bool enabled();
void set_enabled(bool on);

// Σ w[i]·x[i] for f32 or bf16 weights and f32 x.
float dot(const float* w, const float* x, int64_t n);
float dot(const uint16_t* w, const float* x, int64_t n);

// out[j] = dot(w, x[j]) for 4 rows x[0..3] sharing one weight row (reads w once).
void dot4(const float* w, const float* const x[4], int64_t n, float out[4]);
void dot4(const uint16_t* w, const float* const x[4], int64_t n, float out[4]);

// y[i] = fma(a, x[i], y[i]) (one rounding per element on every path).
void axpy(float a, const float* x, float* y, int64_t n);
// y[i] = fma(a[p], rows[p][i], y[i]) for p = 0 .. count-1 in order: the same bits as `count` axpy
// calls, with y held in registers across the rows (attention's weighted sum of value rows).
void axpy_rows(const float* a, const float* const* rows, int64_t count, float* y, int64_t n);

// y[i] = e^x[i] (y may be x) for x in [-87.3, 88.7], a few ulp from the correctly rounded value;
// x below the range gives 0 or about 1e-38 and above it the value at 88.7; NaN stays NaN. No libm
// call: a range reduction by ln 2 and a degree-6 polynomial, the same operations (and bits) on
// the AVX2 and scalar paths.
void exp(const float* x, float* y, int64_t n);

// dst[i] = bf16 src[i] as f32.
void bf16_to_f32(const uint16_t* src, float* dst, int64_t n);

}  // namespace lm::simd
