// CUDA versions of the transformer ops. Same contracts as ops_cpu.cpp; every output element is
// produced by one thread (or one fixed-order block reduction), so results are run-to-run identical.
#include <algorithm>
#include <cfloat>

#include "../ops.h"
#include "cuda_common.cuh"

namespace lm::cuda {

namespace {

template <typename W>
__global__ void embedding_kernel(const W* table, int64_t hidden, const int32_t* ids, float* out) {
  const int64_t t = blockIdx.x;
  const W* row = table + static_cast<int64_t>(ids[t]) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) out[t * hidden + i] = to_f32(row[i]);
}

template <typename W>
__global__ void rmsnorm_kernel(const float* x, const W* w, int64_t hidden, float eps, float* out) {
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const float* row = x + t * hidden;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) ss = fmaf(row[i], row[i], ss);
  ss = block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) out[t * hidden + i] = to_f32(w[i]) * (row[i] * inv);
}

__global__ void rope_kernel(float* x, int64_t heads, int64_t head_dim, const int32_t* pos, const float* inv_freq,
                            int32_t rotary_dim, float attention_scaling) {
  const int64_t t = blockIdx.x;
  const int64_t half = rotary_dim / 2;
  for (int64_t idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int64_t h = idx / half, i = idx % half;
    const float angle = static_cast<float>(pos[t]) * inv_freq[i];
    const float c = static_cast<float>(cos(static_cast<double>(angle))) * attention_scaling;
    const float s = static_cast<float>(sin(static_cast<double>(angle))) * attention_scaling;
    float* v = x + (t * heads + h) * head_dim;
    const float x1 = v[i], x2 = v[i + half];
    v[i] = x1 * c - x2 * s;
    v[i + half] = x2 * c + x1 * s;
  }
}

constexpr int kTile = 16;

// out[t][n] = Σ_k x[t][k] · w[n][k] (+ bias): 16×16 output tiles, k in order.
template <typename W>
__global__ void matmul_kernel(const float* x, const W* w, const float* bias, int64_t tokens, int64_t k, int64_t n,
                              float* out) {
  __shared__ float xs[kTile][kTile + 1];
  __shared__ float ws[kTile][kTile + 1];
  const int64_t t = blockIdx.y * kTile + threadIdx.y;
  const int64_t col = blockIdx.x * kTile + threadIdx.x;
  const int64_t w_row = blockIdx.x * kTile + threadIdx.y;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < k; k0 += kTile) {
    const int64_t kk = k0 + threadIdx.x;
    xs[threadIdx.y][threadIdx.x] = (t < tokens && kk < k) ? x[t * k + kk] : 0.0f;
    ws[threadIdx.y][threadIdx.x] = (w_row < n && kk < k) ? to_f32(w[w_row * k + kk]) : 0.0f;
    __syncthreads();
#pragma unroll
    for (int j = 0; j < kTile; j++) acc = fmaf(xs[threadIdx.y][j], ws[threadIdx.x][j], acc);
    __syncthreads();
  }
  if (t < tokens && col < n) out[t * n + col] = acc + (bias ? bias[col] : 0.0f);
}

template <typename C>
__global__ void kv_write_kernel(const float* k, const float* v, C* k_cache, C* v_cache, const int32_t* slots,
                                int64_t row) {
  const int64_t t = blockIdx.x;
  const int32_t slot = slots[t];
  if (slot < 0) return;
  for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
    if constexpr (sizeof(C) == 4) {
      k_cache[slot * row + i] = k[t * row + i];
      v_cache[slot * row + i] = v[t * row + i];
    } else {
      k_cache[slot * row + i] = to_bf16(k[t * row + i]);
      v_cache[slot * row + i] = to_bf16(v[t * row + i]);
    }
  }
}

constexpr int kAttnChunk = 512;

// One block per (token, head); keys in chunks with an online softmax. Thread i < head_dim owns
// output dimension i and accumulates over keys in order.
template <typename C>
__global__ void attention_kernel(AttentionArgs a, const C* k_cache, const C* v_cache) {
  __shared__ float scores[kAttnChunk];
  __shared__ float scratch[32];
  extern __shared__ float q_shared[];
  const int64_t t = blockIdx.x / a.heads, h = blockIdx.x % a.heads;
  const int64_t d = a.head_dim, kvh = h / (a.heads / a.kv_heads), kv_row = a.kv_heads * d;
  const int64_t pos = a.token_pos[t];
  const int64_t first = a.window > 0 ? max(int64_t(0), pos - a.window + 1) : 0;
  const int32_t* table = a.block_tables + static_cast<int64_t>(a.token_seq[t]) * a.max_blocks;
  for (int64_t i = threadIdx.x; i < d; i += blockDim.x) q_shared[i] = a.q[(t * a.heads + h) * d + i];
  __syncthreads();
  auto offset = [&](int64_t p) {
    return (static_cast<int64_t>(table[p / a.block_size]) * a.block_size + p % a.block_size) * kv_row + kvh * d;
  };
  float running_max = -INFINITY, running_sum = 0.0f, acc = 0.0f;
  for (int64_t c0 = first; c0 <= pos; c0 += kAttnChunk) {
    const int64_t c1 = min(pos + 1, c0 + kAttnChunk);
    float local_max = -INFINITY;
    for (int64_t p = c0 + threadIdx.x; p < c1; p += blockDim.x) {
      const C* kr = k_cache + offset(p);
      float s = 0.0f;
      for (int64_t i = 0; i < d; i++) s = fmaf(to_f32(kr[i]), q_shared[i], s);
      s *= a.scale;
      scores[p - c0] = s;
      local_max = fmaxf(local_max, s);
    }
    const float chunk_max = block_max(local_max, scratch);
    const float new_max = fmaxf(running_max, chunk_max);
    const float correction = running_max == -INFINITY ? 0.0f : expf(running_max - new_max);
    float local_sum = 0.0f;
    for (int64_t p = c0 + threadIdx.x; p < c1; p += blockDim.x) {
      const float e = expf(scores[p - c0] - new_max);
      scores[p - c0] = e;
      local_sum += e;
    }
    const float chunk_sum = block_sum(local_sum, scratch);  // includes a barrier: scores are visible
    running_sum = running_sum * correction + chunk_sum;
    if (threadIdx.x < d) {
      acc *= correction;
      for (int64_t p = c0; p < c1; p++) acc = fmaf(scores[p - c0], to_f32(v_cache[offset(p) + threadIdx.x]), acc);
    }
    running_max = new_max;
    __syncthreads();
  }
  if (threadIdx.x < d) a.out[t * a.heads * d + h * d + threadIdx.x] = acc / running_sum;
}

__global__ void silu_mul_kernel(const float* gu, int64_t tokens, int64_t inter, float* out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= tokens * inter) return;
  const int64_t t = idx / inter, i = idx % inter;
  const float g = gu[t * 2 * inter + i], u = gu[t * 2 * inter + inter + i];
  out[idx] = (g / (1.0f + expf(-g))) * u;
}

__global__ void moe_route_kernel(const float* logits, int64_t tokens, int64_t experts, int32_t top_k, bool renorm,
                                 int32_t* out_e, float* out_w) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= tokens) return;
  const float* l = logits + t * experts;
  float mx = -INFINITY;
  for (int64_t i = 0; i < experts; i++) mx = fmaxf(mx, l[i]);
  float sum = 0.0f;
  for (int64_t i = 0; i < experts; i++) sum += expf(l[i] - mx);
  float picked = 0.0f;
  for (int32_t j = 0; j < top_k; j++) {
    int64_t best = -1;
    float best_p = -1.0f;
    for (int64_t i = 0; i < experts; i++) {
      bool taken = false;
      for (int32_t q = 0; q < j; q++) taken |= out_e[t * top_k + q] == i;
      const float p = expf(l[i] - mx) / sum;
      if (!taken && p > best_p) {
        best_p = p;
        best = i;
      }
    }
    out_e[t * top_k + j] = static_cast<int32_t>(best);
    out_w[t * top_k + j] = best_p;
    picked += best_p;
  }
  if (renorm) {
    for (int32_t j = 0; j < top_k; j++) out_w[t * top_k + j] /= picked;
  }
}

__global__ void add_kernel(float* a, const float* b, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) a[i] += b[i];
}

// Block per row: (value, index) reduction, ties to the lower index; `exclude` skips chosen indices.
__device__ void block_argmax(const float* l, int64_t vocab, const int32_t* exclude, int32_t n_exclude, float* best_v,
                             int32_t* best_i) {
  __shared__ float vs[1024];
  __shared__ int32_t is[1024];
  float v = -INFINITY;
  int32_t idx = INT32_MAX;
  for (int64_t i = threadIdx.x; i < vocab; i += blockDim.x) {
    bool skip = false;
    for (int32_t q = 0; q < n_exclude; q++) skip |= exclude[q] == i;
    if (!skip && (l[i] > v || idx == INT32_MAX)) {
      v = l[i];
      idx = static_cast<int32_t>(i);
    }
  }
  vs[threadIdx.x] = v;
  is[threadIdx.x] = idx;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) {
      const float ov = vs[threadIdx.x + stride];
      const int32_t oi = is[threadIdx.x + stride];
      if (ov > vs[threadIdx.x] || (ov == vs[threadIdx.x] && oi < is[threadIdx.x])) {
        vs[threadIdx.x] = ov;
        is[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  *best_v = vs[0];
  *best_i = is[0];
  __syncthreads();
}

__global__ void argmax_kernel(const float* logits, int64_t vocab, int32_t* out) {
  float v;
  int32_t i;
  block_argmax(logits + static_cast<int64_t>(blockIdx.x) * vocab, vocab, nullptr, 0, &v, &i);
  if (threadIdx.x == 0) out[blockIdx.x] = i;
}

__global__ void topk_kernel(const float* logits, int64_t vocab, int32_t k, int32_t* indices, float* values) {
  int32_t* chosen = indices + static_cast<int64_t>(blockIdx.x) * k;
  for (int32_t j = 0; j < k; j++) {
    float v;
    int32_t i;
    block_argmax(logits + static_cast<int64_t>(blockIdx.x) * vocab, vocab, chosen, j, &v, &i);
    if (threadIdx.x == 0) {
      chosen[j] = i;
      values[static_cast<int64_t>(blockIdx.x) * k + j] = v;
    }
    __syncthreads();
  }
}

}  // namespace

lm_status embedding(const void* table, lm_dtype dtype, int64_t hidden, const int32_t* ids, int64_t tokens, float* out) {
  if (tokens == 0) return LM_OK;
  if (dtype == LM_F32) embedding_kernel<<<tokens, 256>>>(static_cast<const float*>(table), hidden, ids, out);
  else embedding_kernel<<<tokens, 256>>>(static_cast<const uint16_t*>(table), hidden, ids, out);
  return launched("embedding");
}

lm_status rmsnorm(const float* x, const void* w, lm_dtype w_dtype, int64_t tokens, int64_t hidden, float eps, float* out) {
  if (tokens == 0) return LM_OK;
  if (w_dtype == LM_F32) rmsnorm_kernel<<<tokens, 256>>>(x, static_cast<const float*>(w), hidden, eps, out);
  else rmsnorm_kernel<<<tokens, 256>>>(x, static_cast<const uint16_t*>(w), hidden, eps, out);
  return launched("rmsnorm");
}

lm_status rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* pos, const float* inv_freq,
               int32_t rotary_dim, float attention_scaling) {
  if (tokens == 0) return LM_OK;
  rope_kernel<<<tokens, 256>>>(x, heads, head_dim, pos, inv_freq, rotary_dim, attention_scaling);
  return launched("rope");
}

lm_status matmul(const float* x, const void* w, lm_dtype w_dtype, const float* bias, int64_t tokens, int64_t k,
                 int64_t n, float* out) {
  if (tokens == 0 || n == 0) return LM_OK;
  dim3 block(kTile, kTile), grid(blocks_for(n, kTile), blocks_for(tokens, kTile));
  if (w_dtype == LM_F32) matmul_kernel<<<grid, block>>>(x, static_cast<const float*>(w), bias, tokens, k, n, out);
  else matmul_kernel<<<grid, block>>>(x, static_cast<const uint16_t*>(w), bias, tokens, k, n, out);
  return launched("matmul");
}

lm_status kv_cache_write(const KvWriteArgs& a) {
  if (a.tokens == 0) return LM_OK;
  if (a.cache_dtype == LM_F32) {
    kv_write_kernel<<<a.tokens, 256>>>(a.k, a.v, static_cast<float*>(a.k_cache), static_cast<float*>(a.v_cache), a.slots, a.row);
  } else {
    kv_write_kernel<<<a.tokens, 256>>>(a.k, a.v, static_cast<uint16_t*>(a.k_cache), static_cast<uint16_t*>(a.v_cache), a.slots, a.row);
  }
  return launched("kv_cache_write");
}

lm_status attention(const AttentionArgs& a) {
  if (a.tokens == 0) return LM_OK;
  if (a.head_dim > 1024) return fail(LM_ERR_ARGUMENT, "attention: head_dim above 1024 is not supported on CUDA");
  const unsigned threads = static_cast<unsigned>(std::max<int64_t>(128, ((a.head_dim + 31) / 32) * 32));
  const size_t shared = static_cast<size_t>(a.head_dim) * sizeof(float);
  const unsigned blocks = static_cast<unsigned>(a.tokens * a.heads);
  if (a.cache_dtype == LM_F32) {
    attention_kernel<<<blocks, threads, shared>>>(a, static_cast<const float*>(a.k_cache), static_cast<const float*>(a.v_cache));
  } else {
    attention_kernel<<<blocks, threads, shared>>>(a, static_cast<const uint16_t*>(a.k_cache), static_cast<const uint16_t*>(a.v_cache));
  }
  return launched("attention");
}

lm_status silu_mul(const float* gu, int64_t tokens, int64_t inter, float* out) {
  if (tokens * inter == 0) return LM_OK;
  silu_mul_kernel<<<blocks_for(tokens * inter, 256), 256>>>(gu, tokens, inter, out);
  return launched("silu_mul");
}

lm_status moe_route(const float* logits, int64_t tokens, int64_t experts, int32_t top_k, bool renormalize,
                    int32_t* out_experts, float* out_weights) {
  if (tokens == 0) return LM_OK;
  moe_route_kernel<<<blocks_for(tokens, 128), 128>>>(logits, tokens, experts, top_k, renormalize, out_experts, out_weights);
  return launched("moe_route");
}

lm_status add(float* a, const float* b, int64_t n) {
  if (n == 0) return LM_OK;
  add_kernel<<<blocks_for(n, 256), 256>>>(a, b, n);
  return launched("add");
}

lm_status argmax(const float* logits, int64_t rows, int64_t vocab, int32_t* out) {
  if (rows == 0) return LM_OK;
  argmax_kernel<<<rows, 1024>>>(logits, vocab, out);
  return launched("argmax");
}

lm_status topk(const float* logits, int64_t rows, int64_t vocab, int32_t k, int32_t* indices, float* values) {
  if (rows == 0) return LM_OK;
  topk_kernel<<<rows, 1024>>>(logits, vocab, k, indices, values);
  return launched("topk");
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

lm_status set_device(int device) {
  if (device < 0 || device >= device_count()) {
    return fail(LM_ERR_DEVICE, "CUDA device " + std::to_string(device) + " is not available (" + std::to_string(device_count()) + " visible)");
  }
  return check(cudaSetDevice(device), "cudaSetDevice");
}

lm_status malloc_device(size_t bytes, void** out) {
  cudaError_t err = cudaMalloc(out, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return fail(LM_ERR_MEMORY, "cudaMalloc of " + std::to_string(bytes) + " bytes failed: out of device memory");
  }
  return check(err, "cudaMalloc");
}
lm_status free_device(void* p) { return check(cudaFree(p), "cudaFree"); }
lm_status memcpy_h2d(void* dst, const void* src, size_t bytes) { return check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice), "cudaMemcpy H2D"); }
lm_status memcpy_d2h(void* dst, const void* src, size_t bytes) { return check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy D2H"); }
lm_status synchronize() { return check(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

}  // namespace lm::cuda
