// Batched heterogeneous-rank LoRA on CUDA: one metadata kernel, then one fused launch.
//
// The metadata kernel sorts rows by key (adapter slot, or slot*experts + expert) stably, cuts the
// sorted rows into segments of at most kSegmentRows rows, and writes one work item per
// (segment, slice) whose rank is non-zero, plus the item count, into fixed-capacity buffers.
// The fused kernel runs on a fixed grid (persistent blocks that stride over the items), so a CUDA
// graph captured once stays valid for any batch. For an item, a block:
//   shrink: h[i][j] = A[j,:]·x[row_i]; one warp per rank row j; each lane keeps one partial sum per
//           row and the warp reduces them with a fixed butterfly;
//   expand: y[row_i][col] += scale·(B[col,:]·h[i]) (· routing weight); one thread per column, j in
//           order.
// Every h and y element has one producer and a fixed order: results are bitwise reproducible.
// Each item reads its own rank, so a mixed batch costs its true-rank bytes.
// This is the portable FMA version; tensor-core (mma.sync) tiles and split-K for small batches are
// tuned on the H100 separately.
#include <algorithm>
#include <mutex>
#include <vector>

#include "../ops.h"
#include "cuda_common.cuh"

namespace lm::cuda {

namespace {

constexpr int kSegmentRows = 16;
constexpr int kThreads = 256;

struct Item {
  int32_t begin;  // start in the sorted row order
  int32_t rows;
  int32_t key;
  int32_t slice;
};

struct Workspace {
  int32_t* sorted = nullptr;  // [capacity_rows]
  Item* items = nullptr;      // [capacity_rows * LM_LORA_MAX_SLICES]
  int32_t* item_count = nullptr;
  int32_t* key_start = nullptr;  // [capacity_keys + 1]
  int64_t capacity_rows = 0, capacity_keys = 0;
};

std::mutex workspace_mutex;
Workspace workspaces[64];

// Fixed-capacity buffers per device, grown when a larger batch arrives (a graph captured after
// the growth keeps using them).
lm_status workspace_for(int64_t rows, int64_t keys, Workspace** out) {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return check(cudaGetLastError(), "cudaGetDevice");
  Workspace& ws = workspaces[device % 64];
  if (ws.capacity_rows < rows || ws.capacity_keys < keys) {
    cudaFree(ws.sorted);
    cudaFree(ws.items);
    cudaFree(ws.item_count);
    cudaFree(ws.key_start);
    ws = Workspace{};
    const int64_t cap_rows = std::max<int64_t>(rows, 1024), cap_keys = std::max<int64_t>(keys, 1024);
    lm_status s = check(cudaMalloc(&ws.sorted, cap_rows * sizeof(int32_t)), "lora workspace");
    if (s == LM_OK) s = check(cudaMalloc(&ws.items, cap_rows * LM_LORA_MAX_SLICES * sizeof(Item)), "lora workspace");
    if (s == LM_OK) s = check(cudaMalloc(&ws.item_count, sizeof(int32_t)), "lora workspace");
    if (s == LM_OK) s = check(cudaMalloc(&ws.key_start, (cap_keys + 1) * sizeof(int32_t)), "lora workspace");
    if (s != LM_OK) return s;
    ws.capacity_rows = cap_rows;
    ws.capacity_keys = cap_keys;
  }
  *out = &ws;
  return LM_OK;
}

__device__ __forceinline__ int32_t row_key(const LoraArgs& a, int64_t r) {
  const int32_t slot = a.row_slot[r];
  const int32_t expert = a.row_expert ? a.row_expert[r] : 0;
  if (slot < 0 || expert < 0 || expert >= a.n_experts) return -1;
  const int64_t key = static_cast<int64_t>(slot) * a.n_experts + expert;
  return key < a.n_keys ? static_cast<int32_t>(key) : -1;
}

// Stable counting sort by key and the work list, on one thread: O(rows + keys), deterministic, and
// cheap at decode batch sizes. (A parallel version belongs to the H100 tuning work.)
__global__ void plan_kernel(LoraArgs a, int32_t* sorted, Item* items, int32_t* item_count, int32_t* key_start) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  for (int32_t k = 0; k <= a.n_keys; k++) key_start[k] = 0;
  for (int64_t r = 0; r < a.rows; r++) {
    const int32_t k = row_key(a, r);
    if (k >= 0) key_start[k + 1]++;
  }
  for (int32_t k = 0; k < a.n_keys; k++) key_start[k + 1] += key_start[k];
  // Place rows, using key_start[k] as the cursor; afterwards key_start[k] is the end of key k.
  for (int64_t r = 0; r < a.rows; r++) {
    const int32_t k = row_key(a, r);
    if (k >= 0) sorted[key_start[k]++] = static_cast<int32_t>(r);
  }
  int32_t n = 0, begin = 0;
  for (int32_t k = 0; k < a.n_keys; k++) {
    const int32_t end = key_start[k];
    for (int32_t s0 = begin; s0 < end; s0 += kSegmentRows) {
      const int32_t rows = min(kSegmentRows, end - s0);
      for (int32_t sl = 0; sl < a.n_slices; sl++) {
        const int32_t rank = a.rank[k * a.n_slices + sl];
        if (rank > 0 && rank <= a.max_rank) items[n++] = Item{s0, rows, k, sl};
      }
    }
    begin = end;
  }
  *item_count = n;
}

template <typename W, typename X>
__global__ void __launch_bounds__(kThreads) lora_kernel(LoraArgs a, const int32_t* sorted, const Item* items,
                                                        const int32_t* item_count) {
  extern __shared__ float h[];  // [kSegmentRows][max_rank]
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const W* a_pool = static_cast<const W*>(a.a_pool);
  const W* b_pool = static_cast<const W*>(a.b_pool);
  const X* x = static_cast<const X*>(a.x);
  const int32_t count = *item_count;
  for (int32_t it = blockIdx.x; it < count; it += gridDim.x) {
    const Item item = items[it];
    const int64_t idx = static_cast<int64_t>(item.key) * a.n_slices + item.slice;
    const int32_t rank = a.rank[idx];
    const float scale = a.scale[idx];
    const W* A = a_pool + a.a_offset[idx];
    const W* B = b_pool + a.b_offset[idx];
    int64_t xrow[kSegmentRows];
#pragma unroll
    for (int i = 0; i < kSegmentRows; i++) {
      const int64_t r = i < item.rows ? sorted[item.begin + i] : 0;
      xrow[i] = (a.row_token ? a.row_token[r] : r) * a.h_in;
    }
    // shrink
    for (int32_t j = warp; j < rank; j += warps) {
      float acc[kSegmentRows];
#pragma unroll
      for (int i = 0; i < kSegmentRows; i++) acc[i] = 0.0f;
      const W* a_row = A + static_cast<int64_t>(j) * a.h_in;
      for (int64_t k = lane; k < a.h_in; k += 32) {
        const float av = to_f32(a_row[k]);
#pragma unroll
        for (int i = 0; i < kSegmentRows; i++) {
          if (i < item.rows) acc[i] = fmaf(av, to_f32(x[xrow[i] + k]), acc[i]);
        }
      }
#pragma unroll
      for (int i = 0; i < kSegmentRows; i++) {
        const float total = warp_sum(acc[i]);
        if (lane == 0 && i < item.rows) h[i * a.max_rank + j] = total;
      }
    }
    __syncthreads();
    // expand
    const int32_t width = a.slice_width[item.slice];
    const int32_t column = a.slice_offset[item.slice];
    for (int32_t n = threadIdx.x; n < width; n += blockDim.x) {
      const W* b_row = B + static_cast<int64_t>(n) * rank;
      float acc[kSegmentRows];
#pragma unroll
      for (int i = 0; i < kSegmentRows; i++) acc[i] = 0.0f;
      for (int32_t j = 0; j < rank; j++) {
        const float bv = to_f32(b_row[j]);
#pragma unroll
        for (int i = 0; i < kSegmentRows; i++) acc[i] = fmaf(bv, h[i * a.max_rank + j], acc[i]);
      }
#pragma unroll
      for (int i = 0; i < kSegmentRows; i++) {
        if (i >= item.rows) continue;
        const int64_t r = sorted[item.begin + i];
        float delta = acc[i] * scale;
        if (a.row_weight) delta *= a.row_weight[r];
        a.y[r * a.n_out + column + n] += delta;
      }
    }
    __syncthreads();
  }
}

}  // namespace

lm_status lora(const LoraArgs& args) {
  if (args.rows == 0) return LM_OK;
  if (args.max_rank <= 0) return LM_OK;
  Workspace* ws = nullptr;
  {
    std::lock_guard<std::mutex> lock(workspace_mutex);
    lm_status s = workspace_for(args.rows, args.n_keys, &ws);
    if (s != LM_OK) return s;
  }
  plan_kernel<<<1, 32>>>(args, ws->sorted, ws->items, ws->item_count, ws->key_start);
  lm_status s = launched("lora plan");
  if (s != LM_OK) return s;
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const unsigned grid = static_cast<unsigned>(std::max(1, sms) * 4);
  const size_t shared = static_cast<size_t>(kSegmentRows) * args.max_rank * sizeof(float);
  const bool w16 = args.weight_dtype == LM_BF16, x16 = args.x_dtype == LM_BF16;
  if (w16 && x16) lora_kernel<uint16_t, uint16_t><<<grid, kThreads, shared>>>(args, ws->sorted, ws->items, ws->item_count);
  else if (w16) lora_kernel<uint16_t, float><<<grid, kThreads, shared>>>(args, ws->sorted, ws->items, ws->item_count);
  else if (x16) lora_kernel<float, uint16_t><<<grid, kThreads, shared>>>(args, ws->sorted, ws->items, ws->item_count);
  else lora_kernel<float, float><<<grid, kThreads, shared>>>(args, ws->sorted, ws->items, ws->item_count);
  return launched("lora");
}

}  // namespace lm::cuda
