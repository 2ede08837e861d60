// CPU transformer ops. Work is split so that every output element is produced by exactly one
// thread with a fixed reduction order (see simd.h): results do not depend on the thread count.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <numeric>
#include <thread>
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

// Splits [0, n) into chunks of about `grain` and runs them across the pool.
template <typename Fn>
void for_chunks(int64_t n, int64_t grain, Fn&& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  int64_t chunks = (n + grain - 1) / grain;
  parallel_for(chunks, [&](int64_t c) {
    int64_t begin = c * grain;
    fn(begin, std::min(n, begin + grain));
  });
}

}  // namespace

void embedding(const void* table, lm_dtype dtype, int64_t hidden, const int32_t* ids, int64_t tokens, float* out) {
  for_chunks(tokens, 16, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      const int64_t row = static_cast<int64_t>(ids[t]) * hidden;
      if (dtype == LM_F32) {
        std::copy_n(static_cast<const float*>(table) + row, hidden, out + t * hidden);
      } else {
        simd::bf16_to_f32(static_cast<const uint16_t*>(table) + row, out + t * hidden, hidden);
      }
    }
  });
}

void rmsnorm(const float* x, const void* w, lm_dtype w_dtype, int64_t tokens, int64_t hidden, float eps, float* out) {
  for_chunks(tokens, 8, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      const float* row = x + t * hidden;
      float ss = simd::dot(row, row, hidden);
      float inv = 1.0f / std::sqrt(ss / static_cast<float>(hidden) + eps);
      float* o = out + t * hidden;
      for (int64_t i = 0; i < hidden; i++) o[i] = load_elem(w, w_dtype, i) * (row[i] * inv);
    }
  });
}

void rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* pos, const float* inv_freq,
          int32_t rotary_dim, float attention_scaling) {
  const int64_t half = rotary_dim / 2;
  for_chunks(tokens, 8, [&](int64_t b, int64_t e) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = b; t < e; t++) {
      for (int64_t i = 0; i < half; i++) {
        // As Hugging Face: the angle is an fp32 product, cos/sin are scaled after.
        float angle = static_cast<float>(pos[t]) * inv_freq[i];
        cs[i] = static_cast<float>(std::cos(static_cast<double>(angle))) * attention_scaling;
        sn[i] = static_cast<float>(std::sin(static_cast<double>(angle))) * attention_scaling;
      }
      for (int64_t h = 0; h < heads; h++) {
        float* v = x + (t * heads + h) * head_dim;
        for (int64_t i = 0; i < half; i++) {
          float x1 = v[i], x2 = v[i + half];
          v[i] = x1 * cs[i] - x2 * sn[i];
          v[i + half] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  });
}

namespace {

// How a one-token matmul hands its rows to the pool (ops.h). LORAMESH_DECODE_CHUNKS: "0" fixed items,
// "1" (or unset) shrinking runs; "alt" switches between the two at every native step (run_step),
// fixed items first, for same-process comparisons.
const char* decode_chunks_env() {
  const char* v = std::getenv("LORAMESH_DECODE_CHUNKS");
  return v == nullptr ? "" : v;
}
const bool g_alt_chunks = std::strcmp(decode_chunks_env(), "alt") == 0;
const bool g_alt_fuse = [] {
  const char* v = std::getenv("LORAMESH_LORA_FUSE");
  return v != nullptr && std::strcmp(v, "alt") == 0;
}();
// The LoRA expand's short-row prefetch: 2 tiles ahead into L1 (default), or 8 tiles into L2 with
// LORAMESH_LORA_PREFETCH_FAR=1 (issue 17, fourteenth pass: not shown to win a step); =alt switches
// it at every one-token step. Same bits either way.
const char* prefetch_far_env() {
  const char* v = std::getenv("LORAMESH_LORA_PREFETCH_FAR");
  return v == nullptr ? "" : v;
}
const bool g_alt_far = std::strcmp(prefetch_far_env(), "alt") == 0;
[[maybe_unused]] const bool g_far_init = [] {
  if (std::strcmp(prefetch_far_env(), "1") == 0) gemm::set_short_prefetch_far(true);
  return true;
}();
// One-token sites' shrink in whole slices, the expand deferred past an unfinished shrink (ops.h,
// lora_coarse()): LORAMESH_LORA_COARSE=0 off, =alt switched at every one-token step.
const char* coarse_env() {
  const char* v = std::getenv("LORAMESH_LORA_COARSE");
  return v == nullptr ? "" : v;
}
const bool g_alt_coarse = std::strcmp(coarse_env(), "alt") == 0;
std::atomic<bool> g_coarse{std::strcmp(coarse_env(), "0") != 0 && !g_alt_coarse};
// One-token sites' expand in long spans of B (ops.h, lora_span()): LORAMESH_LORA_SPAN=0 off, =alt
// switched at every one-token step (variant 1 on).
const char* span_env() {
  const char* v = std::getenv("LORAMESH_LORA_SPAN");
  return v == nullptr ? "" : v;
}
const bool g_alt_span = std::strcmp(span_env(), "alt") == 0;
std::atomic<bool> g_span{std::strcmp(span_env(), "0") != 0 && !g_alt_span};
// The expand tile's grouped load order (gemm.h, set_expand_grouped): one row pair a group by default
// (issue 17, twenty-fifth pass B: the r128 step −1.3 to −3.3 ms in in-process pairs, 2 pairs less,
// 4 pairs worse); LORAMESH_LORA_EXPAND_GROUPED=0 gives every pair per line, =N N pairs a group,
// =alt (=alt:N) switches between 0 (variant 0) and 1 (N) at every one-token step. Same bits.
const char* expand_grouped_env() {
  const char* v = std::getenv("LORAMESH_LORA_EXPAND_GROUPED");
  return v == nullptr ? "" : v;
}
const bool g_alt_expand_grouped = std::strncmp(expand_grouped_env(), "alt", 3) == 0;
const int g_expand_grouped = [] {
  const char* v = expand_grouped_env();
  if (g_alt_expand_grouped) return v[3] == ':' ? std::atoi(v + 4) : 1;
  const int n = *v == '\0' ? 1 : std::atoi(v);
  gemm::set_expand_grouped(n);
  return n;
}();
// The one-token bf16 expand's 16-row line tile (gemm.h): LORAMESH_LORA_EXPAND16=alt switches it at
// every one-token step, for same-process comparisons with the 8-row tile. Same bits either way.
const bool g_alt_expand16 = [] {
  const char* v = std::getenv("LORAMESH_LORA_EXPAND16");
  return v != nullptr && std::strcmp(v, "alt") == 0;
}();
// Attention's KV rows prefetched into L2 at the start of each head group: on by default (−17 to
// −27 % of attention's time at context 256–320, alternated in one process; issue 17, thirteenth
// pass). LORAMESH_ATTN_PREFETCH=0 turns it off, =alt switches it at every one-token step
// (set_variant). Same bits either way.
const char* attn_prefetch_env() {
  const char* v = std::getenv("LORAMESH_ATTN_PREFETCH");
  return v == nullptr ? "" : v;
}
const bool g_alt_attn = std::strcmp(attn_prefetch_env(), "alt") == 0;
std::atomic<bool> g_attn_prefetch{std::strcmp(attn_prefetch_env(), "0") != 0};
// The decode GEMV's prefetch distance (gemm.h, set_gemv_prefetch_bytes): LORAMESH_GEMV_PREFETCH_BYTES=N
// sets it, =alt:N switches between the default 2048 (variant 0) and N (variant 1) at every one-token
// step. Same bits at any distance.
const char* gemv_bytes_env() {
  const char* v = std::getenv("LORAMESH_GEMV_PREFETCH_BYTES");
  return v == nullptr ? "" : v;
}
const bool g_alt_gemv_bytes = std::strncmp(gemv_bytes_env(), "alt:", 4) == 0;
const int64_t g_gemv_bytes = [] {
  const char* v = gemv_bytes_env();
  if (g_alt_gemv_bytes) v += 4;
  const long long n = std::atoll(v);
  if (n > 0 && !g_alt_gemv_bytes) gemm::set_gemv_prefetch_bytes(n);
  return n > 0 ? static_cast<int64_t>(n) : int64_t{2048};
}();
// The same prefetch in address order (gemm.h, set_gemv_prefetch_seq): on by default (issue 17,
// twenty-fourth pass: −0.4 to −4.4 ms a base step in eight in-process pairs); LORAMESH_GEMV_PREFETCH_SEQ=0
// turns it off, =alt switches it at every one-token step (variant 1 on).
const char* gemv_seq_env() {
  const char* v = std::getenv("LORAMESH_GEMV_PREFETCH_SEQ");
  return v == nullptr ? "" : v;
}
const bool g_alt_gemv_seq = std::strcmp(gemv_seq_env(), "alt") == 0;
[[maybe_unused]] const bool g_gemv_seq_init = [] {
  gemm::set_gemv_prefetch_seq(std::strcmp(gemv_seq_env(), "0") != 0 && !g_alt_gemv_seq);
  return true;
}();
// The bf16 decode tile's unpack widening (gemm.h, set_gemv_unpack): on by default (issue 17,
// twenty-fourth pass: −1.1 to −1.9 ms a base step in three in-process pairs); LORAMESH_GEMV_UNPACK=0
// turns it off, =alt switches it at every one-token step (variant 1 on).
const char* gemv_unpack_env() {
  const char* v = std::getenv("LORAMESH_GEMV_UNPACK");
  return v == nullptr ? "" : v;
}
const bool g_alt_gemv_unpack = std::strcmp(gemv_unpack_env(), "alt") == 0;
[[maybe_unused]] const bool g_gemv_unpack_init = [] {
  gemm::set_gemv_unpack(std::strcmp(gemv_unpack_env(), "0") != 0 && !g_alt_gemv_unpack);
  return true;
}();
// Rows a tile of the one-token bf16 GEMV (gemm.h, set_gemv_tile): 4 by default (issue 17,
// twenty-fifth pass: −9.9 ± 1.1 ms a base step over ten in-process pairs against 8, about −24 % in
// the VM's fast minutes and −10 % in its slow ones); LORAMESH_GEMV_TILE=8, 4 or 2 sets it, =alt:N
// switches between 8 (variant 0) and N (variant 1) at every one-token step.
constexpr int kDefaultGemvTile = 4;
const char* gemv_tile_env() {
  const char* v = std::getenv("LORAMESH_GEMV_TILE");
  return v == nullptr ? "" : v;
}
const bool g_alt_gemv_tile = std::strncmp(gemv_tile_env(), "alt:", 4) == 0;
const int g_gemv_tile_rows = [] {
  const char* v = gemv_tile_env();
  if (g_alt_gemv_tile) v += 4;
  const int n = *v != '\0' ? std::atoi(v) : kDefaultGemvTile;
  if (!g_alt_gemv_tile) gemm::set_gemv_tile(n);
  return n;
}();
constexpr int64_t kAttnPrefetchTokens = 16;
inline void prefetch_l2(const char* p) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_prefetch(p, 0, 2);
#else
  (void)p;
#endif
}
// Spins until `done` reaches `count` (the other thread's last shrink items: microseconds).
void wait_for(const std::atomic<int64_t>& done, int64_t count) {
  while (done.load(std::memory_order_acquire) < count) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}
// The extra items the next matmul on this thread runs in its pool job (MatmulExtra).
thread_local MatmulExtra* t_extra = nullptr;
std::atomic<int> g_decode_chunks{std::strcmp(decode_chunks_env(), "0") == 0 ? 0 : 1};

template <typename W>
void matmul_block(const float* x, const void* w, const float* bias, int64_t tokens, int64_t k, int64_t n, int64_t nb,
                  int64_t ne, float* out) {
  gemm::matmul_rows(x, static_cast<const W*>(w), bias, tokens, k, n, nb, ne, out);
}

}  // namespace

void set_attn_prefetch(bool on) { g_attn_prefetch.store(on, std::memory_order_relaxed); }
void set_decode_chunks(int mode) { g_decode_chunks.store(mode, std::memory_order_relaxed); }
int decode_chunks() { return g_decode_chunks.load(std::memory_order_relaxed); }
bool alternating() {
  return g_alt_chunks || g_alt_fuse || g_alt_attn || g_alt_far || g_alt_expand16 || g_alt_coarse || g_alt_gemv_bytes ||
         g_alt_gemv_seq || g_alt_gemv_unpack || g_alt_gemv_tile || g_alt_span || g_alt_expand_grouped;
}
bool lora_coarse() { return g_coarse.load(std::memory_order_relaxed); }
void set_lora_coarse(bool on) { g_coarse.store(on, std::memory_order_relaxed); }
bool lora_span() { return g_span.load(std::memory_order_relaxed); }
void set_lora_span(bool on) { g_span.store(on, std::memory_order_relaxed); }
void set_variant(int variant) {
  if (g_alt_chunks) set_decode_chunks(variant & 1);
  if (g_alt_fuse) set_lora_fuse(variant & 1);
  if (g_alt_attn) g_attn_prefetch.store((variant & 1) != 0, std::memory_order_relaxed);
  if (g_alt_far) gemm::set_short_prefetch_far((variant & 1) != 0);
  if (g_alt_expand16) gemm::set_expand16((variant & 1) != 0);
  if (g_alt_coarse) g_coarse.store((variant & 1) != 0, std::memory_order_relaxed);
  if (g_alt_gemv_bytes) gemm::set_gemv_prefetch_bytes((variant & 1) != 0 ? g_gemv_bytes : 2048);
  if (g_alt_gemv_seq) gemm::set_gemv_prefetch_seq((variant & 1) != 0);
  if (g_alt_gemv_unpack) gemm::set_gemv_unpack((variant & 1) != 0);
  if (g_alt_gemv_tile) gemm::set_gemv_tile((variant & 1) != 0 ? g_gemv_tile_rows : 8);
  if (g_alt_span) g_span.store((variant & 1) != 0, std::memory_order_relaxed);
  if (g_alt_expand_grouped) gemm::set_expand_grouped((variant & 1) != 0 ? g_expand_grouped : 0);
}
const char* alternating_what() {
  if (g_alt_gemv_tile) return "LORAMESH_GEMV_TILE";
  if (g_alt_expand_grouped) return "LORAMESH_LORA_EXPAND_GROUPED";
  if (g_alt_span) return "LORAMESH_LORA_SPAN";
  if (g_alt_gemv_unpack) return "LORAMESH_GEMV_UNPACK";
  if (g_alt_gemv_seq) return "LORAMESH_GEMV_PREFETCH_SEQ";
  if (g_alt_gemv_bytes) return "LORAMESH_GEMV_PREFETCH_BYTES";
  if (g_alt_coarse) return "LORAMESH_LORA_COARSE";
  if (g_alt_expand16) return "LORAMESH_LORA_EXPAND16";
  if (g_alt_far) return "LORAMESH_LORA_PREFETCH_FAR";
  return g_alt_attn ? "LORAMESH_ATTN_PREFETCH" : g_alt_fuse ? "LORAMESH_LORA_FUSE" : "LORAMESH_DECODE_CHUNKS";
}

namespace {

// The step profile's JobSplit of one one-token matmul job from its indices' marks (start, end in ns
// from the job's start; the thread that ran each): a thread's span runs from its first index's
// start to its last index's end.
template <typename Mark>
void record_job_split(const Mark* marks, int64_t count, std::chrono::steady_clock::time_point job_start,
                      int64_t row_bytes) {
  profile::JobSplit j{};
  j.wall = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - job_start).count();
  j.threads = static_cast<int>(count);
  j.dispatch = -1;
  j.wake = -1;
  int64_t caller_end = -1, worker_end_min = -1, worker_end_max = -1;
  for (int64_t i = 0; i < count; i++) {
    const Mark& m = marks[i];
    if (m.end == 0 && m.start == 0) continue;  // an index nobody ran (cannot happen: the caller drains)
    j.busy += m.end - m.start;
    j.rows_ns += m.rows_ns;
    j.rows_bytes += m.rows * row_bytes;
    if (m.caller) {
      if (j.dispatch < 0 || m.start < j.dispatch) j.dispatch = m.start;
      caller_end = std::max(caller_end, m.end);
    } else {
      if (j.wake < 0 || m.start < j.wake) j.wake = m.start;
      worker_end_min = worker_end_min < 0 ? m.end : std::min(worker_end_min, m.end);
      worker_end_max = std::max(worker_end_max, m.end);
    }
  }
  const int64_t last = std::max(caller_end, worker_end_max);
  const int64_t first = worker_end_min < 0 ? caller_end : std::min(caller_end, worker_end_min);
  j.spread = last - first;
  j.tail = j.wall - last;
  j.dispatch = std::max<int64_t>(j.dispatch, 0);
  profile::record_job(j);
}

}  // namespace

MatmulExtra::MatmulExtra(int64_t n, const std::function<void(int64_t)>& fn,
                         const std::function<void(int64_t, int64_t)>* after)
    : n_(n), fn_(fn), after_(after) {
  t_extra = this;
}
MatmulExtra::~MatmulExtra() {
  if (t_extra == this) t_extra = nullptr;
}

void matmul(const float* x, const void* w, lm_dtype w_dtype, const float* bias, int64_t tokens, int64_t k, int64_t n,
            float* out) {
  const int64_t row_bytes = k * (w_dtype == LM_F32 ? 4 : 2);
  auto block = w_dtype == LM_F32 ? matmul_block<float> : matmul_block<uint16_t>;
  const int mode = tokens == 1 ? decode_chunks() : 0;
  const int64_t parts = std::max(1, num_threads());
  // Extra items handed in by the caller (MatmulExtra): taken first, each whole by one thread.
  MatmulExtra* extra = t_extra;
  t_extra = nullptr;
  const int64_t n_extra = extra ? extra->n_ : 0;
  if (extra) extra->ran_ = true;
  if (mode == 1) {
    // One token: each thread claims a contiguous run of rows from a shared counter, a quarter of
    // what is left per thread at first and down to 8-row tiles (≥ 32 KB) at the end. Long runs
    // keep each thread's weight stream (and the tile's prefetch into the next tile) going across
    // what were 64-row items, and the small last claims let both threads finish together instead
    // of one waiting for the other's last 256 KB item. Every row is still computed whole, by one
    // tile or dot product with its fixed lanes, so the bits do not depend on the split.
    const int64_t min_rows = std::max<int64_t>(8, ((int64_t(1) << 15) / std::max<int64_t>(1, row_bytes) + 7) / 8 * 8);
    std::atomic<int64_t> next{0}, next_extra{0}, extra_done{0}, next_span{0};
    const int64_t n_spans = extra && extra->span_ ? extra->n_spans_ : 0;
    const std::function<void(int64_t, int64_t)>* after = extra && n_spans == 0 ? extra->after_ : nullptr;
    if (after) extra->after_ran_ = true;
    if (n_spans > 0) extra->spans_ran_ = true;
    // Step profile (LORAMESH_STEP_PROFILE=1) of a job with a LoRA site: each thread's time in the
    // shrink items, the poll, the base rows and the expand runs, recorded once per thread.
    // With the profile on, every such job also records how its wall time split (JobSplit):
    // each index's thread, start and end against the job's start.
    using clock = std::chrono::steady_clock;
    const bool timing = profile::enabled();
    const bool prof = extra != nullptr && timing;
    struct Mark {
      int64_t start = 0, end = 0, rows_ns = 0, rows = 0;
      bool caller = false;
    };
    constexpr int64_t kMaxMarks = 64;
    Mark marks[kMaxMarks];
    const auto caller = std::this_thread::get_id();
    const clock::time_point job_start = timing ? clock::now() : clock::time_point{};
    parallel_for(parts, [&](int64_t index) {
      profile::set_thread_timing(prof);
      int64_t t_shrink = 0, t_poll = 0, t_base = 0, t_expand = 0, base_rows = 0, shrunk = 0;
      const auto now = [timing] { return timing ? clock::now() : clock::time_point{}; };
      const auto ns = [](clock::time_point a, clock::time_point b) {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count();
      };
      clock::time_point t0 = now();
      const clock::time_point index_start = t0;
      for (int64_t e = next_extra.fetch_add(1, std::memory_order_relaxed); e < n_extra;
           e = next_extra.fetch_add(1, std::memory_order_relaxed)) {
        extra->fn_(e);
        extra_done.fetch_add(1, std::memory_order_acq_rel);
        shrunk++;
      }
      clock::time_point t1 = now();
      t_shrink += ns(t0, t1);
      // Deferred (lora_coarse()): a thread whose shrink items are done goes on to its base rows
      // at once and runs the expand of each run as soon as every item is done, the runs it did
      // before that afterwards (each run's columns still whole, after its own base rows: same
      // bits). The few long items a coarse shrink makes are then not balanced by a poll.
      const bool defer = after != nullptr && lora_coarse();
      thread_local std::vector<std::pair<int64_t, int64_t>> pending;
      pending.clear();
      int64_t spanned = 0;
      if (n_spans > 0) {
        // Spans (lora_span()): once every item is done, a thread takes spans before more base rows,
        // so they are long calls early in the job and the base rows' shrinking claims even out
        // the end. A thread out of base rows with spans left waits for the items, then takes them.
        int64_t begin = next.load(std::memory_order_relaxed);
        for (;;) {
          if (next_span.load(std::memory_order_relaxed) < n_spans &&
              extra_done.load(std::memory_order_acquire) >= n_extra) {
            const int64_t s = next_span.fetch_add(1, std::memory_order_relaxed);
            if (s < n_spans) {
              t0 = now();
              (*extra->span_)(s);
              t_expand += ns(t0, now());
              spanned++;
              continue;
            }
          }
          const int64_t left = n - begin;
          if (left <= 0) break;
          int64_t size = (left / (2 * parts) + 7) / 8 * 8;
          size = std::max(size, min_rows);
          if (size >= left) size = left;
          if (!next.compare_exchange_weak(begin, begin + size, std::memory_order_relaxed)) continue;
          t0 = now();
          block(x, w, bias, tokens, k, n, begin, begin + size, out);
          t_base += ns(t0, now());
          base_rows += size;
          begin = next.load(std::memory_order_relaxed);
        }
        if (next_span.load(std::memory_order_relaxed) < n_spans) {
          t0 = now();
          wait_for(extra_done, n_extra);
          t1 = now();
          t_poll += ns(t0, t1);
          for (int64_t s = next_span.fetch_add(1, std::memory_order_relaxed); s < n_spans;
               s = next_span.fetch_add(1, std::memory_order_relaxed)) {
            (*extra->span_)(s);
            spanned++;
          }
          t_expand += ns(t1, now());
        }
      } else if (after && !defer) {
        // `after` needs every item done; the rest are short (a LoRA shrink's last 64 KB items),
        // held by the other thread, so poll for them.
        wait_for(extra_done, n_extra);
        t0 = now();
        t_poll += ns(t1, t0);
      }
      int64_t begin = n_spans > 0 ? n : next.load(std::memory_order_relaxed);
      for (;;) {
        const int64_t left = n - begin;
        if (left <= 0) break;
        int64_t size = (left / (2 * parts) + 7) / 8 * 8;
        size = std::max(size, min_rows);
        if (size >= left) size = left;
        if (!next.compare_exchange_weak(begin, begin + size, std::memory_order_relaxed)) continue;
        t0 = now();
        block(x, w, bias, tokens, k, n, begin, begin + size, out);
        t1 = now();
        t_base += ns(t0, t1);
        base_rows += size;
        if (defer && (!pending.empty() || extra_done.load(std::memory_order_acquire) < n_extra)) {
          if (extra_done.load(std::memory_order_acquire) < n_extra) {
            pending.emplace_back(begin, begin + size);
          } else {
            for (const auto& [pb, pe] : pending) (*after)(pb, pe);
            pending.clear();
            (*after)(begin, begin + size);
            t_expand += ns(t1, now());
          }
        } else if (after) {
          (*after)(begin, begin + size);
          t_expand += ns(t1, now());
        }
        begin = next.load(std::memory_order_relaxed);
      }
      if (!pending.empty()) {
        t0 = now();
        wait_for(extra_done, n_extra);
        t1 = now();
        t_poll += ns(t0, t1);
        for (const auto& [pb, pe] : pending) (*after)(pb, pe);
        pending.clear();
        t_expand += ns(t1, now());
      }
      if (timing && index < kMaxMarks) {
        Mark& m = marks[index];
        m.start = ns(job_start, index_start);
        m.end = ns(job_start, now());
        m.rows_ns = t_base;
        m.rows = base_rows;
        m.caller = std::this_thread::get_id() == caller;
      }
      profile::set_thread_timing(false);
      if (prof) {
        profile::record(profile::kFusedShrink, t_shrink, 0, n_extra > 0 ? extra->items_bytes_ * shrunk / n_extra : 0);
        profile::record(profile::kFusedBase, t_base, 0, base_rows * row_bytes);
        if (after) {
          profile::record(profile::kFusedPoll, t_poll, 0, 0);
          profile::record(profile::kFusedExpand, t_expand, 0, extra->after_bytes_ * base_rows / n);
        } else if (n_spans > 0) {
          profile::record(profile::kFusedPoll, t_poll, 0, 0);
          profile::record(profile::kFusedExpand, t_expand, 0, extra->after_bytes_ * spanned / n_spans);
        }
      }
    });
    if (timing) record_job_split(marks, std::min(parts, kMaxMarks), job_start, row_bytes);
    return;
  }
  // An item is a block of weight rows (a multiple of the 8-row tile) read once for all tokens.
  // Blocks stay small enough that both cores get work at decode and the row panel stays in L2.
  int64_t rows_per_item = std::max<int64_t>(8, std::min<int64_t>(128, (int64_t(1) << 18) / std::max<int64_t>(1, row_bytes)));
  rows_per_item = (rows_per_item + 7) / 8 * 8;
  if (n_extra == 0) {
    for_chunks(n, rows_per_item, [&](int64_t nb, int64_t ne) { block(x, w, bias, tokens, k, n, nb, ne, out); });
    return;
  }
  const int64_t chunks = (n + rows_per_item - 1) / rows_per_item;
  parallel_for(n_extra + chunks, [&](int64_t i) {
    if (i < n_extra) return extra->fn_(i);
    const int64_t nb = (i - n_extra) * rows_per_item;
    block(x, w, bias, tokens, k, n, nb, std::min(n, nb + rows_per_item), out);
  });
}

void kv_cache_write(const KvWriteArgs& a) {
  for_chunks(a.tokens, 32, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      if (a.slots[t] < 0) continue;
      const int64_t dst = static_cast<int64_t>(a.slots[t]) * a.row;
      if (a.cache_dtype == LM_F32) {
        std::copy_n(a.k + t * a.row, a.row, static_cast<float*>(a.k_cache) + dst);
        std::copy_n(a.v + t * a.row, a.row, static_cast<float*>(a.v_cache) + dst);
      } else {
        auto* kc = static_cast<uint16_t*>(a.k_cache) + dst;
        auto* vc = static_cast<uint16_t*>(a.v_cache) + dst;
        for (int64_t i = 0; i < a.row; i++) {
          kc[i] = float_to_bf16(a.k[t * a.row + i]);
          vc[i] = float_to_bf16(a.v[t * a.row + i]);
        }
      }
    }
  });
}

// One item per (token, KV head): the group's query heads share each key and value row, so a row is
// read (and for a bf16 cache widened) once for the group, and the group's scores come four heads
// at a time from simd::dot4 (independent FMA chains; one head's dot waits on its own FMA latency).
// Every head still gets exactly the operations of its own pass: the same dot lanes, the same max,
// exp, sum and axpy in position order, so the same bits as one item per head.
void attention(const AttentionArgs& a) {
  const int64_t group = a.heads / a.kv_heads;
  const int64_t d = a.head_dim;
  const int64_t kv_row = a.kv_heads * d;
  parallel_for(a.tokens * a.kv_heads, [&](int64_t item) {
    const int64_t t = item / a.kv_heads, kvh = item % a.kv_heads, h0 = kvh * group;
    const int64_t pos = a.token_pos[t];
    const int64_t first = a.window > 0 ? std::max<int64_t>(0, pos - a.window + 1) : 0;
    const int64_t len = pos - first + 1;
    const int32_t* table = a.block_tables + static_cast<int64_t>(a.token_seq[t]) * a.max_blocks;
    const float* q = a.q + (t * a.heads + h0) * d;  // the group's heads, d floats each
    thread_local std::vector<float> scores, kbuf, acc;
    scores.resize(static_cast<size_t>(group * len));
    kbuf.resize(static_cast<size_t>(d));
    acc.assign(static_cast<size_t>(group * d), 0.0f);
    auto key_row = [&](const void* cache, int64_t p) -> const float* {
      const int64_t off = (static_cast<int64_t>(table[p / a.block_size]) * a.block_size + p % a.block_size) * kv_row + kvh * d;
      if (a.cache_dtype == LM_F32) return static_cast<const float*>(cache) + off;
      simd::bf16_to_f32(static_cast<const uint16_t*>(cache) + off, kbuf.data(), d);
      return kbuf.data();
    };
    if (a.tokens <= kAttnPrefetchTokens && g_attn_prefetch.load(std::memory_order_relaxed)) {
      // Every key and value row of this head group, into L2 up front: at decode the weights'
      // stream has evicted the cache, and the score pass otherwise waits on each key row in turn
      // (a prefetch a few positions ahead did not help: eleventh pass). Capped at 512 KiB a group
      // so the first rows are still in L2 when the pass reaches them. Decode batches only: prefill
      // finds its rows in cache, just written.
      const int64_t elem = a.cache_dtype == LM_F32 ? 4 : 2;
      const int64_t row_bytes = d * elem;
      const int64_t last = std::min(pos, first + (int64_t(256) << 10) / row_bytes - 1);
      for (const void* cache : {a.k_cache, a.v_cache}) {
        const char* base = static_cast<const char*>(cache);
        for (int64_t p = first; p <= last; p++) {
          const int64_t off = (static_cast<int64_t>(table[p / a.block_size]) * a.block_size + p % a.block_size) * kv_row + kvh * d;
          const char* row = base + off * elem;
          for (int64_t b = 0; b < row_bytes; b += 64) prefetch_l2(row + b);
        }
      }
    }
    for (int64_t p = first; p <= pos; p++) {
      const float* key = key_row(a.k_cache, p);
      int64_t g = 0;
      for (; g + 4 <= group; g += 4) {
        const float* qs[4] = {q + g * d, q + (g + 1) * d, q + (g + 2) * d, q + (g + 3) * d};
        float r[4];
        simd::dot4(key, qs, d, r);
        for (int j = 0; j < 4; j++) scores[static_cast<size_t>((g + j) * len + (p - first))] = r[j] * a.scale;
      }
      for (; g < group; g++) scores[static_cast<size_t>(g * len + (p - first))] = simd::dot(key, q + g * d, d) * a.scale;
    }
    thread_local std::vector<float> inv;
    inv.resize(static_cast<size_t>(group));
    for (int64_t g = 0; g < group; g++) {
      float* sc = scores.data() + g * len;
      float max_score = -std::numeric_limits<float>::infinity();
      for (int64_t i = 0; i < len; i++) max_score = std::max(max_score, sc[i]);
      for (int64_t i = 0; i < len; i++) sc[i] -= max_score;
      simd::exp(sc, sc, len);
      float denom = 0.0f;
      for (int64_t i = 0; i < len; i++) denom += sc[i];
      inv[static_cast<size_t>(g)] = 1.0f / denom;
    }
    if (a.cache_dtype == LM_F32) {
      // Each head's weighted sum of the value rows with its accumulator in registers (axpy_rows:
      // the same fused multiply-adds in the same order as one axpy per position).
      thread_local std::vector<const float*> vrows;
      vrows.resize(static_cast<size_t>(len));
      for (int64_t p = first; p <= pos; p++) vrows[static_cast<size_t>(p - first)] = key_row(a.v_cache, p);
      for (int64_t g = 0; g < group; g++) simd::axpy_rows(scores.data() + g * len, vrows.data(), len, acc.data() + g * d, d);
    } else {
      for (int64_t p = first; p <= pos; p++) {
        const float* v = key_row(a.v_cache, p);
        for (int64_t g = 0; g < group; g++) simd::axpy(scores[static_cast<size_t>(g * len + (p - first))], v, acc.data() + g * d, d);
      }
    }
    for (int64_t g = 0; g < group; g++) {
      float* o = a.out + t * a.heads * d + (h0 + g) * d;
      const float* ac = acc.data() + g * d;
      for (int64_t i = 0; i < d; i++) o[i] = ac[i] * inv[static_cast<size_t>(g)];
    }
  });
}

void silu_mul(const float* gu, int64_t tokens, int64_t inter, float* out) {
  for_chunks(tokens, 8, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      const float* g = gu + t * 2 * inter;
      const float* u = g + inter;
      float* o = out + t * inter;
      for (int64_t i = 0; i < inter; i++) o[i] = -g[i];
      simd::exp(o, o, inter);  // o = e^-g, vectorized
      for (int64_t i = 0; i < inter; i++) o[i] = (g[i] / (1.0f + o[i])) * u[i];
    }
  });
}

void moe_route(const float* logits, int64_t tokens, int64_t experts, int32_t top_k, bool renormalize,
               int32_t* out_experts, float* out_weights) {
  for_chunks(tokens, 16, [&](int64_t b, int64_t e) {
    std::vector<float> prob(static_cast<size_t>(experts));
    std::vector<int32_t> order(static_cast<size_t>(experts));
    for (int64_t t = b; t < e; t++) {
      const float* l = logits + t * experts;
      float mx = *std::max_element(l, l + experts);
      float sum = 0.0f;
      for (int64_t i = 0; i < experts; i++) sum += (prob[static_cast<size_t>(i)] = std::exp(l[i] - mx));
      for (float& p : prob) p /= sum;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + top_k, order.end(), [&](int32_t x, int32_t y) {
        return prob[static_cast<size_t>(x)] > prob[static_cast<size_t>(y)] ||
               (prob[static_cast<size_t>(x)] == prob[static_cast<size_t>(y)] && x < y);
      });
      float picked = 0.0f;
      for (int32_t j = 0; j < top_k; j++) picked += prob[static_cast<size_t>(order[static_cast<size_t>(j)])];
      for (int32_t j = 0; j < top_k; j++) {
        const int32_t ex = order[static_cast<size_t>(j)];
        out_experts[t * top_k + j] = ex;
        out_weights[t * top_k + j] = renormalize ? prob[static_cast<size_t>(ex)] / picked : prob[static_cast<size_t>(ex)];
      }
    }
  });
}

void add(float* a, const float* b, int64_t n) {
  for_chunks(n, 1 << 16, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; i++) a[i] += b[i];
  });
}

void argmax(const float* logits, int64_t rows, int64_t vocab, int32_t* out) {
  for_chunks(rows, 1, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const float* l = logits + r * vocab;
      int64_t best = 0;
      for (int64_t i = 1; i < vocab; i++) {
        if (l[i] > l[best]) best = i;  // strict: ties keep the lower index
      }
      out[r] = static_cast<int32_t>(best);
    }
  });
}

void topk(const float* logits, int64_t rows, int64_t vocab, int32_t k, int32_t* indices, float* values) {
  for_chunks(rows, 1, [&](int64_t b, int64_t e) {
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    for (int64_t r = b; r < e; r++) {
      const float* l = logits + r * vocab;
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(),
                        [&](int32_t x, int32_t y) { return l[x] > l[y] || (l[x] == l[y] && x < y); });
      for (int32_t j = 0; j < k; j++) {
        indices[r * k + j] = order[static_cast<size_t>(j)];
        values[r * k + j] = l[order[static_cast<size_t>(j)]];
      }
    }
  });
}

}  // namespace lm::cpu
