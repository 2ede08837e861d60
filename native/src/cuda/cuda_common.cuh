// Shared pieces of the CUDA path: error handling, bf16 loads, fixed-order reductions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "../common.h"

namespace lm::cuda {

inline lm_status check(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return LM_OK;
  return fail(LM_ERR_CUDA, std::string(what) + ": " + cudaGetErrorString(err));
}

// Checks the launch that just happened.
inline lm_status launched(const char* what) { return check(cudaGetLastError(), what); }

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(uint16_t v) { return __uint_as_float(static_cast<uint32_t>(v) << 16); }

__device__ __forceinline__ uint16_t to_bf16(float f) {
  uint32_t bits = __float_as_uint(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// Butterfly sum across a warp: the same order on every run.
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

// Block-wide sum (blockDim.x a multiple of 32, at most 1024); `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = lane < warps ? scratch[lane] : 0.0f;
  if (warp == 0) total = warp_sum(total);
  if (threadIdx.x == 0) scratch[0] = total;
  __syncthreads();
  float result = scratch[0];
  __syncthreads();
  return result;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = lane < warps ? scratch[lane] : -INFINITY;
  if (warp == 0) total = warp_max(total);
  if (threadIdx.x == 0) scratch[0] = total;
  __syncthreads();
  float result = scratch[0];
  __syncthreads();
  return result;
}

inline unsigned blocks_for(int64_t n, unsigned threads) {
  return static_cast<unsigned>((n + threads - 1) / threads);
}

}  // namespace lm::cuda
