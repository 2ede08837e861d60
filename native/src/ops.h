// Validated op parameters shared by the CPU and CUDA implementations. api.cpp checks the tensors and
// fills these; the implementations trust them.
#pragma once

#include <cstdint>
#include <functional>

#include "loramesh/core.h"

namespace lm {

struct AttentionArgs {
  const float* q;        // [T, heads, head_dim]
  const void* k_cache;   // [blocks, block_size, kv_heads, head_dim]
  const void* v_cache;
  lm_dtype cache_dtype;
  const int32_t* block_tables;  // [num_seqs, max_blocks]
  const int32_t* token_seq;     // [T]
  const int32_t* token_pos;     // [T]
  int64_t tokens, heads, kv_heads, head_dim, block_size, max_blocks, num_blocks;
  float scale;
  int32_t window;  // 0 = unlimited
  float* out;      // [T, heads*head_dim]
};

struct KvWriteArgs {
  const float* k;  // [T, kv_heads, head_dim]
  const float* v;
  void* k_cache;
  void* v_cache;
  lm_dtype cache_dtype;
  const int32_t* slots;  // [T]
  int64_t tokens, row;   // row = kv_heads * head_dim
};

// One LoRA site, dense or MoE, after validation. Rows are tokens (dense) or token-expert pairs (MoE).
struct LoraArgs {
  const void* a_pool;
  const void* b_pool;
  lm_dtype weight_dtype;
  int32_t n_keys, n_slices;
  int32_t slice_width[LM_LORA_MAX_SLICES];
  int32_t slice_offset[LM_LORA_MAX_SLICES];  // column offset of each slice in y
  const int32_t* rank;
  const float* scale;
  const int64_t* a_offset;
  const int64_t* b_offset;
  bool b_transposed;  // each B stored [rank, width] (lm_lora_weights.b_transposed)
  int32_t max_rank;
  const void* x;  // [x_rows, h_in]
  lm_dtype x_dtype;
  int64_t x_rows, h_in;
  int64_t rows;            // rows of y
  int32_t n_experts;       // 1 for dense
  const int32_t* row_token;   // null: identity
  const int32_t* row_slot;    // [rows], -1 none
  const int32_t* row_expert;  // null: expert 0
  const float* row_weight;    // null: 1
  float* y;                // [rows, n_out]
  int64_t n_out;
};

// lm_lora_apply's checks and arguments without the run (the native step's fused LoRA sites).
lm_status lora_args(const lm_lora_weights* weights, const lm_tensor* x, const lm_tensor* token_slot, lm_tensor* y,
                    LoraArgs* out, lm_device* device);

namespace cpu {
void embedding(const void* table, lm_dtype dtype, int64_t hidden, const int32_t* ids, int64_t tokens, float* out);
void rmsnorm(const float* x, const void* w, lm_dtype w_dtype, int64_t tokens, int64_t hidden, float eps, float* out);
void rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* pos, const float* inv_freq,
          int32_t rotary_dim, float attention_scaling);
void matmul(const float* x, const void* w, lm_dtype w_dtype, const float* bias, int64_t tokens, int64_t k, int64_t n,
            float* out);
// How a one-token matmul splits its rows across the pool: 0 fixed items of about 256 KB (as every
// other batch size), 1 shrinking contiguous runs claimed per thread (the default;
// LORAMESH_DECODE_CHUNKS=0 turns it off). Same bits either way. With LORAMESH_DECODE_CHUNKS=alt the
// native step switches between the two at every one-token step and profiles each separately.
void set_decode_chunks(int mode);
int decode_chunks();
// Same-process comparisons: with LORAMESH_DECODE_CHUNKS=alt the native step calls set_variant(0, 1,
// 0, …) before each one-token step (the decode split = the variant), and the step profile keeps a
// table per variant.
bool alternating();
void set_variant(int variant);
// Which switch `alt` is on (LORAMESH_DECODE_CHUNKS or LORAMESH_LORA_FUSE), for the profile's labels.
const char* alternating_what();
void kv_cache_write(const KvWriteArgs& a);
void attention(const AttentionArgs& a);
// Attention prefetches each head group's key and value rows into L2 before its score pass (default
// on; LORAMESH_ATTN_PREFETCH=0 off, =alt alternated per step). Same bits either way.
void set_attn_prefetch(bool on);
void silu_mul(const float* gu, int64_t tokens, int64_t inter, float* out);
void moe_route(const float* logits, int64_t tokens, int64_t experts, int32_t top_k, bool renormalize,
               int32_t* out_experts, float* out_weights);
void add(float* a, const float* b, int64_t n);
void argmax(const float* logits, int64_t rows, int64_t vocab, int32_t* out);
void topk(const float* logits, int64_t rows, int64_t vocab, int32_t k, int32_t* indices, float* values);
void lora(const LoraArgs& a);
// lora() in parts, for a caller that runs them in its own pool jobs: plan() sorts the rows and
// lists the work items (false: no row has an adapter, nothing to do); shrink(i) computes a block
// of h = A·x, expand(i) adds a block of scale·B·h into y. Every expand item needs every shrink item
// done. Each item is done whole by one thread with lora()'s fixed order: the same bits, however
// the items are spread. Valid until the next plan() or lora() on the planning thread (its scratch).
class LoraJob {
 public:
  bool plan(const LoraArgs& a);
  int64_t shrink_count() const;
  int64_t expand_count() const;
  void shrink(int64_t i) const;
  void expand(int64_t i) const;
  // The expand of output columns [c0, c1) of y (all slices, all rows): what expand() items cover.
  void expand_columns(int64_t c0, int64_t c1) const;
  // One-token sites under lora_span() (else 0 spans): the expand as a few long spans, each a
  // contiguous run of one slice's B (about the slice ÷ threads), written by span(i) to the job's
  // scratch; every span needs every shrink item done. add_spans(), once all are done (and the base
  // projection has written y), adds scale · span into y with expand()'s expression: the same bits.
  int64_t span_count() const;
  void span(int64_t i) const;
  void add_spans() const;
  // Each phase on the pool, or on the calling thread for a small site (< 256 KB of weights).
  void run_shrink() const;
  void run_expand() const;
  bool on_pool() const { return on_pool_; }
  // Adapter weight bytes the shrink items and all expand items read (for the step profile).
  int64_t shrink_bytes() const;
  int64_t expand_bytes() const;

 private:
  LoraArgs args_{};
  const void* scratch_ = nullptr;
  bool on_pool_ = false;
};
// Native-step LoRA sites in coupled mode (LocalSiteBackend): 1 (default) runs each dense site's
// shrink inside the base projection's pool job (MatmulExtra), and its expand adding straight into
// the projection's output (at one token in the same job, per run of base rows), with wide expand
// items for a few rows; 0 the separate kernel call into a delta buffer, then the add
// (LORAMESH_LORA_FUSE=0). Same bits either way. =alt switches it at every one-token step (set_variant).
void set_lora_fuse(int mode);
int lora_fuse();
// Under lora_fuse() 1, whether a one-token site's expand also runs in the base matmul's job, on
// each run of base rows (default; LORAMESH_LORA_FUSE_EXPAND=0: a job of its own after it).
bool lora_fuse_expand();
// Under lora_fuse() 1, one-token sites (LoraJob::plan with one row) make one shrink item a slice
// (a whole rank × h_in run of A instead of 16-rank blocks, each of which started cold), and in the
// fused matmul job a thread goes on to its base rows as soon as its own items are done, deferring
// the expand of its runs until every item is (no poll). Default on; LORAMESH_LORA_COARSE=0 off,
// =alt switched at every one-token step. Same bits either way.
bool lora_coarse();
void set_lora_coarse(bool on);  // tests: both ways in one process
// Under lora_coarse(), one-token sites expand in spans (LoraJob::span_count) claimed in the base
// matmul's job as soon as the shrink is done, ahead of the base rows, instead of once per run of
// base rows (after): fewer, longer reads of B. Default on; LORAMESH_LORA_SPAN=0 off, =alt switched
// at every one-token step. Same bits either way.
bool lora_span();
void set_lora_span(bool on);  // tests: both ways in one process
// While one lives on a thread, that thread's next cpu::matmul runs these `n` items in its own pool
// job before its rows (a LoRA site's shrink reads the same x: one fork/join instead of two). Each
// item is done whole by one thread, so results are the same. `ran()`: the matmul took them.
// With `after` (one-token matmuls only): once every item is done, after(begin, end) runs on the
// thread that computed output rows [begin, end), right after them (a LoRA site's expand of those
// columns: its B rows stream next to the weight rows, no second job). `after_ran()`: it did.
class MatmulExtra {
 public:
  MatmulExtra(int64_t n, const std::function<void(int64_t)>& fn,
              const std::function<void(int64_t, int64_t)>* after = nullptr);
  ~MatmulExtra();
  MatmulExtra(const MatmulExtra&) = delete;
  MatmulExtra& operator=(const MatmulExtra&) = delete;
  bool ran() const { return ran_; }
  bool after_ran() const { return after_ran_; }
  // Spans (one-token matmuls; instead of `after`): n more items, each needing every item above done,
  // taken in the same job ahead of the base rows once the items are. `spans_ran()`: all of them ran.
  void set_spans(int64_t n, const std::function<void(int64_t)>* span) {
    n_spans_ = n;
    span_ = span;
  }
  bool spans_ran() const { return spans_ran_; }
  // For the step profile's fused rows: the items' bytes, and `after`'s over all n output rows.
  void set_bytes(int64_t items, int64_t after) {
    items_bytes_ = items;
    after_bytes_ = after;
  }

 private:
  friend void matmul(const float*, const void*, lm_dtype, const float*, int64_t, int64_t, int64_t, float*);
  int64_t n_;
  const std::function<void(int64_t)>& fn_;
  const std::function<void(int64_t, int64_t)>* after_;
  int64_t n_spans_ = 0;
  const std::function<void(int64_t)>* span_ = nullptr;
  bool ran_ = false, after_ran_ = false, spans_ran_ = false;
  int64_t items_bytes_ = 0, after_bytes_ = 0;
};
// Whether the native step's and the LoRA servers' pools of this dtype are rewritten k-major for
// the CPU expand: only with LORAMESH_LORA_KMAJOR=1, and only f32 pools. Measured on AVX2 (issue 17,
// seventh pass): f32 faster, bf16 not. Off by default because the k-major sum order gives other
// bits than the row-major expand that lm_lora_apply callers with [width, r] pools (the JavaScript
// backend, a routed step's rerun through apply) compute, and those paths promise the same bits.
bool prefer_transposed_b(lm_dtype dtype);
// Rewrites every B of a packed pool in place from [width, rank] to [rank, width] (k-major, for
// lm_lora_weights.b_transposed). Checks every entry against the pool first; false (pool untouched)
// when one lies outside it, so that the kernel call reports the bad table as usual.
bool transpose_lora_b(void* b_pool, lm_dtype dtype, int64_t pool_elems, int32_t n_keys, int32_t n_slices,
                      const int32_t* slice_width, const int32_t* rank, const int64_t* b_offset);
}  // namespace cpu

#ifdef LM_WITH_CUDA
namespace cuda {
// Each returns LM_OK or a status with the error set; all run on the current stream of `device`.
lm_status embedding(const void* table, lm_dtype dtype, int64_t hidden, const int32_t* ids, int64_t tokens, float* out);
lm_status rmsnorm(const float* x, const void* w, lm_dtype w_dtype, int64_t tokens, int64_t hidden, float eps,
                  float* out);
lm_status rope(float* x, int64_t tokens, int64_t heads, int64_t head_dim, const int32_t* pos, const float* inv_freq,
               int32_t rotary_dim, float attention_scaling);
lm_status matmul(const float* x, const void* w, lm_dtype w_dtype, const float* bias, int64_t tokens, int64_t k,
                 int64_t n, float* out);
lm_status kv_cache_write(const KvWriteArgs& a);
lm_status attention(const AttentionArgs& a);
lm_status silu_mul(const float* gu, int64_t tokens, int64_t inter, float* out);
lm_status moe_route(const float* logits, int64_t tokens, int64_t experts, int32_t top_k, bool renormalize,
                    int32_t* out_experts, float* out_weights);
lm_status add(float* a, const float* b, int64_t n);
lm_status argmax(const float* logits, int64_t rows, int64_t vocab, int32_t* out);
lm_status topk(const float* logits, int64_t rows, int64_t vocab, int32_t k, int32_t* indices, float* values);
lm_status lora(const LoraArgs& a);
int device_count();
lm_status set_device(int device);
lm_status malloc_device(size_t bytes, void** out);
lm_status free_device(void* p);
lm_status memcpy_h2d(void* dst, const void* src, size_t bytes);
lm_status memcpy_d2h(void* dst, const void* src, size_t bytes);
lm_status synchronize();
}  // namespace cuda
#endif

}  // namespace lm
