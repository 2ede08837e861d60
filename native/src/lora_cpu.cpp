// Batched heterogeneous-rank LoRA on the CPU.
//
// Rows (tokens, or token-expert pairs for MoE) are grouped by key (adapter slot, or slot*experts +
// expert) with a stable counting sort, and split into segments of at most kSegmentRows rows. Then:
//   shrink: h[row, j] = A[j,:] · x[row]        items = (segment, slice, block of ranks)
//   expand: y[row, n] += scale · B[n,:] · h[row] items = (segment, slice, block of columns)
// Each weight row is read once per segment (and reused for four rows at a time). Every h and y
// element is produced by one item with a fixed reduction order, so the result does not depend on
// how many threads run the items. Each key is computed at its own rank: no padding.
#include <algorithm>
#include <functional>
#include <vector>

#include "common.h"
#include "gemm.h"
#include "ops.h"
#include "simd.h"
#include "threads.h"

namespace lm::cpu {

namespace {

constexpr int64_t kSegmentRows = 64;
constexpr int64_t kRankBlock = 16;
constexpr int64_t kColumnBlock = 128;
// Below this many bytes of adapter weights a call runs on the calling thread (see run_items).
constexpr int64_t kPoolBytes = 256 << 10;

struct Segment {
  int32_t key;
  int64_t begin, end;  // range in the sorted row order
};

struct Task {
  int32_t segment;
  int32_t slice;
  int64_t h_offset;  // start of this (segment, slice) block in the h scratch: rows × rank floats
};

// h[row, j] = A[j,:] · x[row] for ranks [j_begin, j_end): A is [rank, h_in] row-major, the layout of a
// weight matrix, so the matmul tiles run it (8 rank rows × up to 6 rows per tile, several
// accumulators in flight) with the same bits as one dot product per element.
template <typename W>
void shrink(const W* a, int64_t h_in, int64_t j_begin, int64_t j_end, const float* const* xs, int64_t rows,
            int64_t rank, float* h) {
  gemm::matmul_rows_ptr(xs, a, rows, h_in, j_begin, j_end, h + j_begin, rank);
}

template <typename W>
void expand(const W* b, int64_t rank, int64_t n_begin, int64_t n_end, const float* h, int64_t rows,
            const int64_t* row_index, const float* row_weight, float scale, float* y, int64_t y_stride,
            int64_t column) {
  // B is [width, rank]: the same tiles give B[n,:] · h[row] for the block's columns at once.
  const int64_t width = n_end - n_begin;
  thread_local std::vector<const float*> hs;
  thread_local std::vector<float> out;
  hs.resize(static_cast<size_t>(rows));
  out.resize(static_cast<size_t>(rows * width));
  for (int64_t i = 0; i < rows; i++) hs[static_cast<size_t>(i)] = h + i * rank;
  gemm::matmul_rows_ptr(hs.data(), b, rows, rank, n_begin, n_end, out.data(), width);
  // PEFT order: (B·A·x) · scaling, then (MoE) the routing weight, then added to the output.
  for (int64_t i = 0; i < rows; i++) {
    const int64_t r = row_index[i];
    const float w = row_weight ? row_weight[r] : 1.0f;
    float* yr = y + r * y_stride + column + n_begin;
    const float* o = out.data() + i * width;
    if (row_weight) {
      for (int64_t n = 0; n < width; n++) yr[n] += (o[n] * scale) * w;
    } else {
      for (int64_t n = 0; n < width; n++) yr[n] += o[n] * scale;
    }
  }
}

}  // namespace

void lora(const LoraArgs& a) {
  const int64_t rows = a.rows;
  // 1. Key of every row, then a stable counting sort by key.
  std::vector<int32_t> key(static_cast<size_t>(rows));
  std::vector<int64_t> count(static_cast<size_t>(a.n_keys) + 1, 0);
  for (int64_t r = 0; r < rows; r++) {
    const int32_t slot = a.row_slot[r];
    const int32_t k = slot < 0 ? -1 : slot * a.n_experts + (a.row_expert ? a.row_expert[r] : 0);
    key[static_cast<size_t>(r)] = k;
    if (k >= 0) count[static_cast<size_t>(k) + 1]++;
  }
  for (int32_t k = 0; k < a.n_keys; k++) count[static_cast<size_t>(k) + 1] += count[static_cast<size_t>(k)];
  const int64_t routed = count[static_cast<size_t>(a.n_keys)];
  if (routed == 0) return;
  std::vector<int64_t> order(static_cast<size_t>(routed));
  {
    std::vector<int64_t> next(count.begin(), count.end() - 1);
    for (int64_t r = 0; r < rows; r++) {
      const int32_t k = key[static_cast<size_t>(r)];
      if (k >= 0) order[static_cast<size_t>(next[static_cast<size_t>(k)]++)] = r;
    }
  }

  // 2. Segments of at most kSegmentRows rows sharing a key.
  std::vector<Segment> segments;
  for (int32_t k = 0; k < a.n_keys; k++) {
    for (int64_t b = count[static_cast<size_t>(k)]; b < count[static_cast<size_t>(k) + 1]; b += kSegmentRows) {
      segments.push_back({k, b, std::min(b + kSegmentRows, count[static_cast<size_t>(k) + 1])});
    }
  }

  // 3. Inputs as f32 row pointers in sorted order (bf16 inputs converted once).
  std::vector<float> x_f32;
  if (a.x_dtype == LM_BF16) {
    x_f32.resize(static_cast<size_t>(a.x_rows * a.h_in));
    parallel_for(a.x_rows, [&](int64_t r) {
      simd::bf16_to_f32(static_cast<const uint16_t*>(a.x) + r * a.h_in, x_f32.data() + r * a.h_in, a.h_in);
    });
  }
  const float* x_base = a.x_dtype == LM_BF16 ? x_f32.data() : static_cast<const float*>(a.x);
  std::vector<const float*> xs(static_cast<size_t>(routed));
  for (int64_t i = 0; i < routed; i++) {
    const int64_t r = order[static_cast<size_t>(i)];
    xs[static_cast<size_t>(i)] = x_base + (a.row_token ? a.row_token[r] : r) * a.h_in;
  }

  // 4. Work items and the h scratch they share.
  std::vector<Task> tasks;
  int64_t h_size = 0;
  for (size_t s = 0; s < segments.size(); s++) {
    for (int32_t sl = 0; sl < a.n_slices; sl++) {
      const int32_t rank = a.rank[segments[s].key * a.n_slices + sl];
      if (rank <= 0) continue;
      tasks.push_back({static_cast<int32_t>(s), sl, h_size});
      h_size += (segments[s].end - segments[s].begin) * rank;
    }
  }
  std::vector<float> h(static_cast<size_t>(h_size));
  struct Item {
    int32_t task;
    int64_t begin, end;
  };
  std::vector<Item> shrink_items, expand_items;
  for (size_t t = 0; t < tasks.size(); t++) {
    const Segment& seg = segments[static_cast<size_t>(tasks[t].segment)];
    const int32_t rank = a.rank[seg.key * a.n_slices + tasks[t].slice];
    for (int64_t j = 0; j < rank; j += kRankBlock) shrink_items.push_back({static_cast<int32_t>(t), j, std::min<int64_t>(rank, j + kRankBlock)});
    const int64_t width = a.slice_width[tasks[t].slice];
    for (int64_t n = 0; n < width; n += kColumnBlock) expand_items.push_back({static_cast<int32_t>(t), n, std::min(width, n + kColumnBlock)});
  }

  const bool bf16 = a.weight_dtype == LM_BF16;
  // Small sites (r16 at decode: ~100 KB of weights) cost less than the two hand-offs to the pool;
  // they run on the calling thread. Each item is still done whole by one thread: same bits.
  int64_t weight_elems = 0;
  for (const Task& t : tasks) {
    const int32_t rank = a.rank[segments[static_cast<size_t>(t.segment)].key * a.n_slices + t.slice];
    weight_elems += rank * (a.h_in + a.slice_width[t.slice]);
  }
  const bool on_pool = weight_elems * (bf16 ? 2 : 4) >= kPoolBytes;
  auto run_items = [&](int64_t n, const std::function<void(int64_t)>& fn) {
    if (on_pool) return parallel_for(n, fn);
    for (int64_t i = 0; i < n; i++) fn(i);
  };
  run_items(static_cast<int64_t>(shrink_items.size()), [&](int64_t i) {
    const Item& it = shrink_items[static_cast<size_t>(i)];
    const Task& task = tasks[static_cast<size_t>(it.task)];
    const Segment& seg = segments[static_cast<size_t>(task.segment)];
    const int64_t idx = static_cast<int64_t>(seg.key) * a.n_slices + task.slice;
    const int64_t rank = a.rank[idx];
    const float* const* x = xs.data() + seg.begin;
    float* hb = h.data() + task.h_offset;
    if (bf16) {
      shrink(static_cast<const uint16_t*>(a.a_pool) + a.a_offset[idx], a.h_in, it.begin, it.end, x, seg.end - seg.begin, rank, hb);
    } else {
      shrink(static_cast<const float*>(a.a_pool) + a.a_offset[idx], a.h_in, it.begin, it.end, x, seg.end - seg.begin, rank, hb);
    }
  });
  run_items(static_cast<int64_t>(expand_items.size()), [&](int64_t i) {
    const Item& it = expand_items[static_cast<size_t>(i)];
    const Task& task = tasks[static_cast<size_t>(it.task)];
    const Segment& seg = segments[static_cast<size_t>(task.segment)];
    const int64_t idx = static_cast<int64_t>(seg.key) * a.n_slices + task.slice;
    const int64_t rank = a.rank[idx];
    const int64_t* rows_of = order.data() + seg.begin;
    const float* hb = h.data() + task.h_offset;
    const int64_t column = a.slice_offset[task.slice];
    if (bf16) {
      expand(static_cast<const uint16_t*>(a.b_pool) + a.b_offset[idx], rank, it.begin, it.end, hb, seg.end - seg.begin, rows_of,
             a.row_weight, a.scale[idx], a.y, a.n_out, column);
    } else {
      expand(static_cast<const float*>(a.b_pool) + a.b_offset[idx], rank, it.begin, it.end, hb, seg.end - seg.begin, rows_of,
             a.row_weight, a.scale[idx], a.y, a.n_out, column);
    }
  });
}

}  // namespace lm::cpu
