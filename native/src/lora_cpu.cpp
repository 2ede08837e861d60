// Batched heterogeneous-rank LoRA on the CPU.
//
// Rows (tokens, or token-expert pairs for MoE) are grouped by key (adapter slot, or slot*experts +
// expert) with a stable counting sort, and split into segments of at most kSegmentRows rows. Then:
//   shrink: h[row, j] = A[j,:] · x[row]        items = (segment, slice, block of ranks)
//   expand: y[row, n] += scale · B[n,:] · h[row] items = (segment, slice, block of columns)
// Each weight row is read once per segment (and reused for four rows at a time). Every h and y
// element is produced by one item with a fixed reduction order, so the result does not depend on
// how many threads run the items. Each key is computed at its own rank: no padding.
// With B stored k-major ([rank, width], b_transposed: the f32 pools of the native step and the LoRA
// servers under LORAMESH_LORA_KMAJOR=1) the expand sums h[row, k] · Bᵀ[k, n] over k in order instead: each item streams Bᵀ's
// rows over a wide block of columns, where B's own rows (rank floats) are too short for the
// hardware prefetcher.
// The scratch vectors are per thread and reused from call to call: a decode step makes ~90 calls.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common.h"
#include "gemm.h"
#include "ops.h"
#include "profile.h"
#include "simd.h"
#include "threads.h"

namespace lm::cpu {

namespace {

constexpr int64_t kSegmentRows = 64;
constexpr int64_t kRankBlock = 16;
constexpr int64_t kColumnBlock = 128;
// Columns per expand item on a k-major B: runs of 4 KB of f32 per Bᵀ row.
constexpr int64_t kKMajorColumns = 1024;
// Wide expand items (under lora_fuse() 1, the default) for segments of at most kWideRows rows: up to this many columns.
constexpr int64_t kWideRows = 4;
constexpr int64_t kWideColumns = 1024;
// LORAMESH_LORA_WIDE=0 keeps 128-column items there (to tell the two changes apart).
const bool g_wide = [] {
  const char* v = std::getenv("LORAMESH_LORA_WIDE");
  return v == nullptr || std::string(v) != "0";
}();
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
  int64_t span_offset = 0;  // start of this slice's columns in the span scratch (one row: width floats)
};

// A span (one-token sites under lora_span()) is at least this many bytes of B when its slice has
// them: k and v (64 KB at r128) stay whole.
constexpr int64_t kSpanMinBytes = 64 << 10;

// h[row, j] = A[j,:] · x[row] for ranks [j_begin, j_end): A is [rank, h_in] row-major, the layout of a
// weight matrix, so the matmul tiles run it (8 rank rows × up to 6 rows per tile, several
// accumulators in flight) with the same bits as one dot product per element.
template <typename W>
void shrink_block(const W* a, int64_t h_in, int64_t j_begin, int64_t j_end, const float* const* xs, int64_t rows,
            int64_t rank, float* h) {
  gemm::matmul_rows_ptr(xs, a, rows, h_in, j_begin, j_end, h + j_begin, rank);
}

// y[n] += scale · o[n] (then, MoE, times the row's routing weight w): PEFT order, (B·A·x) · scaling,
// then the routing weight, then added to the output. One expression for every expand path, so the
// spans (computed apart, added after the job) round exactly as the fused expand does.
inline void add_scaled(float* yr, const float* o, int64_t count, float scale, const float* w) {
  if (w) {
    const float wr = *w;
    for (int64_t n = 0; n < count; n++) yr[n] += (o[n] * scale) * wr;
  } else {
    for (int64_t n = 0; n < count; n++) yr[n] += o[n] * scale;
  }
}

// y[row, column + n] += scale · (B·h[row])[n] for n in [n_begin, n_end): B is [width, rank], or with
// `transposed` Bᵀ [rank, width].
template <typename W>
void expand_block(const W* b, bool transposed, int64_t rank, int64_t width, int64_t n_begin, int64_t n_end, const float* h,
            int64_t rows, const int64_t* row_index, const float* row_weight, float scale, float* y, int64_t y_stride,
            int64_t column) {
  const int64_t block = n_end - n_begin;
  thread_local std::vector<const float*> hs;
  thread_local std::vector<float> out;
  hs.resize(static_cast<size_t>(rows));
  out.resize(static_cast<size_t>(rows * block));
  for (int64_t i = 0; i < rows; i++) hs[static_cast<size_t>(i)] = h + i * rank;
  if (transposed) {
    gemm::matmul_kmajor(hs.data(), b, rows, rank, width, n_begin, n_end, out.data(), block);
  } else {
    // The same tiles as the base matmul give B[n,:] · h[row] for the block's columns at once.
    gemm::matmul_rows_ptr(hs.data(), b, rows, rank, n_begin, n_end, out.data(), block);
  }
  for (int64_t i = 0; i < rows; i++) {
    const int64_t r = row_index[i];
    add_scaled(y + r * y_stride + column + n_begin, out.data() + i * block, block, scale,
               row_weight ? row_weight + r : nullptr);
  }
}

struct Item {
  int32_t task;
  int64_t begin, end;
};

// One call's scratch, kept per calling thread so decode's many small calls do not allocate.
struct Scratch {
  std::vector<int32_t> key;
  std::vector<int64_t> count, order, next;
  std::vector<Segment> segments;
  std::vector<float> x_f32, h, span_out;
  std::vector<const float*> xs;
  std::vector<Task> tasks;
  std::vector<Item> shrink_items, expand_items, span_items;
};

}  // namespace

bool LoraJob::plan(const LoraArgs& args) {
  args_ = args;
  const LoraArgs& a = args_;
  const int64_t rows = a.rows;
  thread_local Scratch scratch;
  scratch_ = &scratch;
  Scratch& sc = scratch;
  // 1. Key of every row, then a stable counting sort by key.
  std::vector<int32_t>& key = sc.key;
  key.resize(static_cast<size_t>(rows));
  std::vector<int64_t>& count = sc.count;
  count.assign(static_cast<size_t>(a.n_keys) + 1, 0);
  for (int64_t r = 0; r < rows; r++) {
    const int32_t slot = a.row_slot[r];
    const int32_t k = slot < 0 ? -1 : slot * a.n_experts + (a.row_expert ? a.row_expert[r] : 0);
    key[static_cast<size_t>(r)] = k;
    if (k >= 0) count[static_cast<size_t>(k) + 1]++;
  }
  for (int32_t k = 0; k < a.n_keys; k++) count[static_cast<size_t>(k) + 1] += count[static_cast<size_t>(k)];
  const int64_t routed = count[static_cast<size_t>(a.n_keys)];
  if (routed == 0) {
    scratch_ = nullptr;  // an empty job
    return false;
  }
  std::vector<int64_t>& order = sc.order;
  order.resize(static_cast<size_t>(routed));
  {
    std::vector<int64_t>& next = sc.next;
    next.assign(count.begin(), count.end() - 1);
    for (int64_t r = 0; r < rows; r++) {
      const int32_t k = key[static_cast<size_t>(r)];
      if (k >= 0) order[static_cast<size_t>(next[static_cast<size_t>(k)]++)] = r;
    }
  }

  // 2. Segments of at most kSegmentRows rows sharing a key.
  std::vector<Segment>& segments = sc.segments;
  segments.clear();
  for (int32_t k = 0; k < a.n_keys; k++) {
    for (int64_t b = count[static_cast<size_t>(k)]; b < count[static_cast<size_t>(k) + 1]; b += kSegmentRows) {
      segments.push_back({k, b, std::min(b + kSegmentRows, count[static_cast<size_t>(k) + 1])});
    }
  }

  // 3. Inputs as f32 row pointers in sorted order (bf16 inputs converted once).
  std::vector<float>& x_f32 = sc.x_f32;
  if (a.x_dtype == LM_BF16) {
    x_f32.resize(static_cast<size_t>(a.x_rows * a.h_in));
    parallel_for(a.x_rows, [&](int64_t r) {
      simd::bf16_to_f32(static_cast<const uint16_t*>(a.x) + r * a.h_in, x_f32.data() + r * a.h_in, a.h_in);
    });
  }
  const float* x_base = a.x_dtype == LM_BF16 ? x_f32.data() : static_cast<const float*>(a.x);
  std::vector<const float*>& xs = sc.xs;
  xs.resize(static_cast<size_t>(routed));
  for (int64_t i = 0; i < routed; i++) {
    const int64_t r = order[static_cast<size_t>(i)];
    xs[static_cast<size_t>(i)] = x_base + (a.row_token ? a.row_token[r] : r) * a.h_in;
  }

  // 4. Work items and the h scratch they share.
  std::vector<Task>& tasks = sc.tasks;
  tasks.clear();
  int64_t h_size = 0;
  for (size_t s = 0; s < segments.size(); s++) {
    for (int32_t sl = 0; sl < a.n_slices; sl++) {
      const int32_t rank = a.rank[segments[s].key * a.n_slices + sl];
      if (rank <= 0) continue;
      tasks.push_back({static_cast<int32_t>(s), sl, h_size});
      h_size += (segments[s].end - segments[s].begin) * rank;
    }
  }
  std::vector<float>& h = sc.h;
  h.resize(static_cast<size_t>(h_size));
  std::vector<Item>& shrink_items = sc.shrink_items;
  std::vector<Item>& expand_items = sc.expand_items;
  shrink_items.clear();
  expand_items.clear();
  const bool wide = lora_fuse() == 1 && g_wide;
  const bool coarse = lora_fuse() == 1 && routed == 1 && lora_coarse();
  const int64_t threads = std::max(1, num_threads());
  for (size_t t = 0; t < tasks.size(); t++) {
    const Segment& seg = segments[static_cast<size_t>(tasks[t].segment)];
    const int32_t rank = a.rank[seg.key * a.n_slices + tasks[t].slice];
    // One row under lora_coarse(): the whole slice, one long run of A (see ops.h).
    const int64_t rank_block = coarse ? rank : kRankBlock;
    for (int64_t j = 0; j < rank; j += rank_block) shrink_items.push_back({static_cast<int32_t>(t), j, std::min<int64_t>(rank, j + rank_block)});
    const int64_t width = a.slice_width[tasks[t].slice];
    int64_t columns = a.b_transposed ? kKMajorColumns : kColumnBlock;
    if (!a.b_transposed && wide && seg.end - seg.begin <= kWideRows) {
      // A few rows (decode): B's rows are rank long, so a 128-column item is one short run of
      // 32 KB (bf16 r128) that ends before the hardware prefetcher is up to speed (~16 GB/s where
      // 128 KB runs read ~27). Wider items, about a quarter of the slice per thread, up to 1024
      // columns. Every column is still one tile row's dot product: same bits.
      const int64_t per = (width / (2 * threads) + 7) / 8 * 8;
      columns = std::min<int64_t>(kWideColumns, std::max(columns, per));
    }
    for (int64_t n = 0; n < width; n += columns) expand_items.push_back({static_cast<int32_t>(t), n, std::min(width, n + columns)});
  }
  // One row under lora_span(): the expand as spans, each one contiguous run of a slice's B (about
  // the slice ÷ threads, in the 16-row tile's steps, at least kSpanMinBytes), instead of one call
  // per run of base rows (78 a layer at r128, half of them under 16 KB, each starting cold).
  std::vector<Item>& span_items = sc.span_items;
  span_items.clear();
  if (coarse && lora_span() && !a.b_transposed) {
    const int64_t elem = a.weight_dtype == LM_BF16 ? 2 : 4;
    int64_t offset = 0;
    for (size_t t = 0; t < tasks.size(); t++) {
      const Segment& seg = segments[static_cast<size_t>(tasks[t].segment)];
      const int64_t rank = a.rank[seg.key * a.n_slices + tasks[t].slice];
      const int64_t width = a.slice_width[tasks[t].slice];
      tasks[t].span_offset = offset;
      offset += width;
      const int64_t min_rows = (kSpanMinBytes / (rank * elem) + 15) / 16 * 16;
      const int64_t rows_per = std::max(min_rows, ((width + threads - 1) / threads + 15) / 16 * 16);
      for (int64_t n = 0; n < width; n += rows_per)
        span_items.push_back({static_cast<int32_t>(t), n, std::min(width, n + rows_per)});
    }
    sc.span_out.resize(static_cast<size_t>(offset));
  }

  const bool bf16 = a.weight_dtype == LM_BF16;
  // Small sites (r16 at decode: ~100 KB of weights) cost less than the two hand-offs to the pool;
  // they run on the calling thread. Each item is still done whole by one thread: same bits.
  int64_t weight_elems = 0;
  for (const Task& t : tasks) {
    const int32_t rank = a.rank[segments[static_cast<size_t>(t.segment)].key * a.n_slices + t.slice];
    weight_elems += rank * (a.h_in + a.slice_width[t.slice]);
  }
  on_pool_ = weight_elems * (bf16 ? 2 : 4) >= kPoolBytes;
  return true;
}

void LoraJob::shrink(int64_t i) const {
  const LoraArgs& a = args_;
  const Scratch& sc = *static_cast<const Scratch*>(scratch_);
  const bool bf16 = a.weight_dtype == LM_BF16;
    const Item& it = sc.shrink_items[static_cast<size_t>(i)];
    const Task& task = sc.tasks[static_cast<size_t>(it.task)];
    const Segment& seg = sc.segments[static_cast<size_t>(task.segment)];
    const int64_t idx = static_cast<int64_t>(seg.key) * a.n_slices + task.slice;
    const int64_t rank = a.rank[idx];
    const float* const* x = sc.xs.data() + seg.begin;
    float* hb = const_cast<float*>(sc.h.data()) + task.h_offset;
    if (bf16) {
      shrink_block(static_cast<const uint16_t*>(a.a_pool) + a.a_offset[idx], a.h_in, it.begin, it.end, x, seg.end - seg.begin, rank, hb);
    } else {
      shrink_block(static_cast<const float*>(a.a_pool) + a.a_offset[idx], a.h_in, it.begin, it.end, x, seg.end - seg.begin, rank, hb);
    }
  }

void LoraJob::expand(int64_t i) const {
  const LoraArgs& a = args_;
  const Scratch& sc = *static_cast<const Scratch*>(scratch_);
  const bool bf16 = a.weight_dtype == LM_BF16;
    const Item& it = sc.expand_items[static_cast<size_t>(i)];
    const Task& task = sc.tasks[static_cast<size_t>(it.task)];
    const Segment& seg = sc.segments[static_cast<size_t>(task.segment)];
    const int64_t idx = static_cast<int64_t>(seg.key) * a.n_slices + task.slice;
    const int64_t rank = a.rank[idx];
    const int64_t* rows_of = sc.order.data() + seg.begin;
    const float* hb = const_cast<float*>(sc.h.data()) + task.h_offset;
    const int64_t column = a.slice_offset[task.slice];
    const int64_t width = a.slice_width[task.slice];
    if (bf16) {
      expand_block(static_cast<const uint16_t*>(a.b_pool) + a.b_offset[idx], a.b_transposed, rank, width, it.begin, it.end, hb,
             seg.end - seg.begin, rows_of, a.row_weight, a.scale[idx], a.y, a.n_out, column);
    } else {
      expand_block(static_cast<const float*>(a.b_pool) + a.b_offset[idx], a.b_transposed, rank, width, it.begin, it.end, hb,
             seg.end - seg.begin, rows_of, a.row_weight, a.scale[idx], a.y, a.n_out, column);
    }
  }

void LoraJob::expand_columns(int64_t c0, int64_t c1) const {
  if (scratch_ == nullptr) return;
  const LoraArgs& a = args_;
  const Scratch& sc = *static_cast<const Scratch*>(scratch_);
  const bool bf16 = a.weight_dtype == LM_BF16;
  for (const Task& task : sc.tasks) {
    const int64_t column = a.slice_offset[task.slice];
    const int64_t width = a.slice_width[task.slice];
    const int64_t nb = std::max<int64_t>(c0 - column, 0), ne = std::min<int64_t>(c1 - column, width);
    if (nb >= ne) continue;
    const Segment& seg = sc.segments[static_cast<size_t>(task.segment)];
    const int64_t idx = static_cast<int64_t>(seg.key) * a.n_slices + task.slice;
    const int64_t rank = a.rank[idx];
    const int64_t* rows_of = sc.order.data() + seg.begin;
    const float* hb = sc.h.data() + task.h_offset;
    const bool timing = profile::thread_timing();
    const auto t0 = timing ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
    if (bf16) {
      expand_block(static_cast<const uint16_t*>(a.b_pool) + a.b_offset[idx], a.b_transposed, rank, width, nb, ne, hb,
                   seg.end - seg.begin, rows_of, a.row_weight, a.scale[idx], a.y, a.n_out, column);
    } else {
      expand_block(static_cast<const float*>(a.b_pool) + a.b_offset[idx], a.b_transposed, rank, width, nb, ne, hb,
                   seg.end - seg.begin, rows_of, a.row_weight, a.scale[idx], a.y, a.n_out, column);
    }
    if (timing)
      profile::record_expand_call(
          (ne - nb) * rank * (bf16 ? 2 : 4),
          std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  }
}

int64_t LoraJob::span_count() const {
  return scratch_ ? static_cast<int64_t>(static_cast<const Scratch*>(scratch_)->span_items.size()) : 0;
}

void LoraJob::span(int64_t i) const {
  const LoraArgs& a = args_;
  const Scratch& sc = *static_cast<const Scratch*>(scratch_);
  const Item& it = sc.span_items[static_cast<size_t>(i)];
  const Task& task = sc.tasks[static_cast<size_t>(it.task)];
  const Segment& seg = sc.segments[static_cast<size_t>(task.segment)];
  const int64_t idx = static_cast<int64_t>(seg.key) * a.n_slices + task.slice;
  const int64_t rank = a.rank[idx];
  const float* hb = sc.h.data() + task.h_offset;
  float* o = const_cast<float*>(sc.span_out.data()) + task.span_offset + it.begin;
  const bool bf16 = a.weight_dtype == LM_BF16;
  const bool timing = profile::thread_timing();
  const auto t0 = timing ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
  // Columns [begin, end) of the slice, as expand_block computes them (one tile row's dot each).
  if (bf16) {
    gemm::matmul_rows_ptr(&hb, static_cast<const uint16_t*>(a.b_pool) + a.b_offset[idx], 1, rank, it.begin, it.end, o,
                          it.end - it.begin);
  } else {
    gemm::matmul_rows_ptr(&hb, static_cast<const float*>(a.b_pool) + a.b_offset[idx], 1, rank, it.begin, it.end, o,
                          it.end - it.begin);
  }
  if (timing)
    profile::record_expand_call(
        (it.end - it.begin) * rank * (bf16 ? 2 : 4),
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
}

void LoraJob::add_spans() const {
  if (scratch_ == nullptr) return;
  const LoraArgs& a = args_;
  const Scratch& sc = *static_cast<const Scratch*>(scratch_);
  for (const Task& task : sc.tasks) {
    const Segment& seg = sc.segments[static_cast<size_t>(task.segment)];
    const int64_t idx = static_cast<int64_t>(seg.key) * a.n_slices + task.slice;
    const int64_t r = sc.order[static_cast<size_t>(seg.begin)];
    add_scaled(a.y + r * a.n_out + a.slice_offset[task.slice], sc.span_out.data() + task.span_offset,
               a.slice_width[task.slice], a.scale[idx], a.row_weight ? a.row_weight + r : nullptr);
  }
}

int64_t LoraJob::shrink_bytes() const {
  if (scratch_ == nullptr) return 0;
  const Scratch& sc = *static_cast<const Scratch*>(scratch_);
  const int64_t elem = args_.weight_dtype == LM_BF16 ? 2 : 4;
  int64_t total = 0;
  for (const Task& t : sc.tasks)
    total += args_.rank[sc.segments[static_cast<size_t>(t.segment)].key * args_.n_slices + t.slice] * args_.h_in * elem;
  return total;
}
int64_t LoraJob::expand_bytes() const {
  if (scratch_ == nullptr) return 0;
  const Scratch& sc = *static_cast<const Scratch*>(scratch_);
  const int64_t elem = args_.weight_dtype == LM_BF16 ? 2 : 4;
  int64_t total = 0;
  for (const Task& t : sc.tasks)
    total += args_.rank[sc.segments[static_cast<size_t>(t.segment)].key * args_.n_slices + t.slice] *
             int64_t{args_.slice_width[t.slice]} * elem;
  return total;
}

int64_t LoraJob::shrink_count() const {
  return scratch_ ? static_cast<int64_t>(static_cast<const Scratch*>(scratch_)->shrink_items.size()) : 0;
}
int64_t LoraJob::expand_count() const {
  return scratch_ ? static_cast<int64_t>(static_cast<const Scratch*>(scratch_)->expand_items.size()) : 0;
}

void LoraJob::run_shrink() const {
  const std::function<void(int64_t)> fn = [this](int64_t i) { shrink(i); };
  if (on_pool_) return parallel_for(shrink_count(), fn);
  for (int64_t i = 0; i < shrink_count(); i++) fn(i);
}

void LoraJob::run_expand() const {
  const std::function<void(int64_t)> fn = [this](int64_t i) { expand(i); };
  if (on_pool_) return parallel_for(expand_count(), fn);
  for (int64_t i = 0; i < expand_count(); i++) fn(i);
}

void lora(const LoraArgs& a) {
  LoraJob job;
  if (!job.plan(a)) return;
  job.run_shrink();
  job.run_expand();
}

namespace {
std::atomic<int> g_lora_fuse{[] {
  // On by default: −2.0 % and −2.2 % a step with adapters, alternated in one process (issue 17,
  // twelfth pass). "0" turns it off; "alt" is switched per step by set_variant.
  const char* v = std::getenv("LORAMESH_LORA_FUSE");
  return v != nullptr && (std::string(v) == "0" || std::string(v) == "alt") ? 0 : 1;
}()};
}  // namespace
void set_lora_fuse(int mode) { g_lora_fuse.store(mode, std::memory_order_relaxed); }
int lora_fuse() { return g_lora_fuse.load(std::memory_order_relaxed); }
bool lora_fuse_expand() {
  static const bool on = [] {
    const char* v = std::getenv("LORAMESH_LORA_FUSE_EXPAND");
    return v == nullptr || std::string(v) != "0";
  }();
  return on;
}

namespace {

template <typename W>
void transpose_entry(W* b, int64_t width, int64_t rank) {
  thread_local std::vector<W> tmp;
  tmp.assign(b, b + width * rank);
  for (int64_t n = 0; n < width; n++)
    for (int64_t k = 0; k < rank; k++) b[k * width + n] = tmp[static_cast<size_t>(n * rank + k)];
}

}  // namespace

bool prefer_transposed_b(lm_dtype dtype) {
  static const bool on = [] {
    const char* v = std::getenv("LORAMESH_LORA_KMAJOR");
    return v != nullptr && std::string(v) == "1";
  }();
  return on && dtype == LM_F32;
}

bool transpose_lora_b(void* b_pool, lm_dtype dtype, int64_t pool_elems, int32_t n_keys, int32_t n_slices,
                      const int32_t* slice_width, const int32_t* rank, const int64_t* b_offset) {
  const int64_t entries = static_cast<int64_t>(n_keys) * n_slices;
  for (int64_t e = 0; e < entries; e++) {
    const int64_t r = rank[e], width = slice_width[e % n_slices];
    if (r < 0 || r > LM_LORA_MAX_RANK || width <= 0) return false;
    if (r > 0 && (b_offset[e] < 0 || b_offset[e] + width * r > pool_elems)) return false;
  }
  // Entries sharing bytes would be transposed twice: such a pool keeps its layout.
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (int64_t e = 0; e < entries; e++) {
    if (rank[e] > 0) spans.push_back({b_offset[e], b_offset[e] + slice_width[e % n_slices] * int64_t{rank[e]}});
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); i++) {
    if (spans[i].first < spans[i - 1].second) return false;
  }
  parallel_for(entries, [&](int64_t e) {
    const int64_t r = rank[e], width = slice_width[e % n_slices];
    if (r <= 1) return;  // one column or none: the same bytes either way
    if (dtype == LM_BF16) {
      transpose_entry(static_cast<uint16_t*>(b_pool) + b_offset[e], width, r);
    } else {
      transpose_entry(static_cast<float*>(b_pool) + b_offset[e], width, r);
    }
  });
  return true;
}

}  // namespace lm::cpu
