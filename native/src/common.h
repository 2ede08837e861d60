// Internal helpers shared by the CPU and CUDA paths: errors, tensor checks, bf16.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "loramesh/core.h"

namespace lm {

// Sets the calling thread's last error and returns the status, so checks read `return fail(...)`.
lm_status fail(lm_status status, const std::string& message);

inline int64_t numel(const lm_tensor& t) {
  int64_t n = 1;
  for (int i = 0; i < t.ndim; i++) n *= t.shape[i];
  return n;
}

inline const char* dtype_name(lm_dtype d) {
  switch (d) {
    case LM_F32: return "f32";
    case LM_BF16: return "bf16";
    case LM_I32: return "i32";
    case LM_I64: return "i64";
  }
  return "unknown";
}

std::string shape_string(const lm_tensor& t);

// Checks that a tensor is present, well formed, of one of the dtypes, with `ndim` dims.
lm_status check_tensor(const lm_tensor* t, const char* name, int ndim, std::initializer_list<lm_dtype> dtypes);

// All present tensors are on the device of `first`; returns that device or fails.
lm_status check_same_device(const char* op, std::initializer_list<const lm_tensor*> tensors, lm_device* device);

inline float bf16_to_float(uint16_t b) {
  uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t float_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

inline float load_elem(const void* base, lm_dtype dtype, int64_t i) {
  return dtype == LM_F32 ? static_cast<const float*>(base)[i] : bf16_to_float(static_cast<const uint16_t*>(base)[i]);
}

inline size_t elem_size(lm_dtype d) { return d == LM_BF16 ? 2 : (d == LM_I64 ? 8 : 4); }

}  // namespace lm
