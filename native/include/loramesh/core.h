/*
 * loramesh compute core: the C ABI.
 *
 * Every function returns an lm_status. On failure, lm_last_error() gives a message for the calling
 * thread. Tensors are described by lm_tensor: a pointer, dtype, device tag and shape; the core never
 * owns caller memory. CPU ops need CPU-tagged tensors. CUDA ops need CUDA-tagged tensors, which only
 * a build with CUDA and a visible GPU can have.
 *
 * Determinism: every output element is reduced by a single thread in a fixed order, so results do not
 * depend on the thread count. The AVX2 and scalar paths give the same bits: the scalar dot product
 * keeps eight fused multiply-add lanes and reduces them in the order the AVX2 horizontal sum does
 * (src/simd.cpp); native/ts/lora.test.ts checks both properties bit for bit.
 */
#ifndef LORAMESH_CORE_H
#define LORAMESH_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  LM_OK = 0,
  LM_ERR_ARGUMENT = 1, /* a parameter is out of range or inconsistent */
  LM_ERR_SHAPE = 2,    /* tensor shapes do not fit together */
  LM_ERR_DTYPE = 3,    /* a dtype the op does not support */
  LM_ERR_SLOT = 4,     /* an adapter slot, expert or token id out of range */
  LM_ERR_DEVICE = 5,   /* tensors on the wrong device, or no CUDA device/build */
  LM_ERR_CUDA = 6,     /* a CUDA runtime error */
  LM_ERR_MEMORY = 7,   /* an allocation failed */
  LM_ERR_UNAVAILABLE = 8, /* a remote LoRA side did not answer, died or detached (retry elsewhere) */
  LM_ERR_NOT_FOUND = 9    /* a remote LoRA server does not hold an adapter the site names */
} lm_status;

typedef enum { LM_F32 = 0, LM_BF16 = 1, LM_I32 = 2, LM_I64 = 3 } lm_dtype;
typedef enum { LM_CPU = 0, LM_CUDA = 1 } lm_device;

#define LM_MAX_DIMS 4

typedef struct {
  void* data;
  lm_dtype dtype;
  lm_device device;
  int32_t device_index;
  int32_t ndim;
  int64_t shape[LM_MAX_DIMS]; /* row-major, contiguous */
} lm_tensor;

/* ---- library ---- */
const char* lm_last_error(void);
const char* lm_version(void);
/* Worker threads for CPU ops (1 = the calling thread only). 0 restores the default (all cores). */
lm_status lm_set_num_threads(int32_t n);
int32_t lm_get_num_threads(void);
/* 1 when the AVX2/FMA path is in use. lm_set_simd(0) forces the scalar fallback (tests). */
int32_t lm_simd_enabled(void);
lm_status lm_set_simd(int32_t enabled);
/* Was the library built with CUDA, and how many devices are visible (0 without a GPU). */
int32_t lm_cuda_built(void);
int32_t lm_cuda_device_count(void);

/* Best read bandwidth (GB/s) of `passes` passes over a fresh buffer of `bytes`, on the CPU pool. */
lm_status lm_read_bandwidth_gbs(size_t bytes, int32_t passes, double* gbs_out);
/* Each pass's read bandwidth (GB/s, gbs_out[passes]): `threads` threads of their own started
   together, each streaming its contiguous share of a fresh `bytes` buffer once (bench:cpu-anchor's floor). */
lm_status lm_read_bandwidth_passes(size_t bytes, int32_t passes, int32_t threads, double* gbs_out);
/* Makes [data, data+bytes) of a file mapping resident for this process (page tables filled, every
   page read once, on the CPU pool), so the first forward pass does not pay for it. */
lm_status lm_prefault(const void* data, size_t bytes);
/* The same on one background thread, returning at once: ranges are made resident in the order they
   are queued while the caller goes on (a forward pass touching a page first faults it itself).
   lm_prefault_cancel must be called before the range is unmapped: it drops the queued work for
   [data, data+bytes) and waits until the background thread is out of it. */
lm_status lm_prefault_async(const void* data, size_t bytes);
void lm_prefault_cancel(const void* data, size_t bytes);

/* ---- device memory (CUDA builds) ---- */
lm_status lm_cuda_malloc(int32_t device, size_t bytes, void** out);
lm_status lm_cuda_free(int32_t device, void* ptr);
lm_status lm_cuda_memcpy_h2d(int32_t device, void* dst, const void* src, size_t bytes);
lm_status lm_cuda_memcpy_d2h(int32_t device, void* dst, const void* src, size_t bytes);
lm_status lm_cuda_synchronize(int32_t device);

/* ---- transformer ops (CPU or CUDA, chosen by the tensors' device) ---- */

/* out[t,:] = table[ids[t],:]. table [V,H] f32|bf16, ids [T] i32, out [T,H] f32. */
lm_status lm_embedding(const lm_tensor* table, const lm_tensor* ids, lm_tensor* out);

/* out = x * rsqrt(mean(x^2) + eps) * weight (HF RMSNorm, fp32). x,out [T,H] f32; weight [H] f32|bf16.
 * out may alias x. */
lm_status lm_rmsnorm(const lm_tensor* x, const lm_tensor* weight, float eps, lm_tensor* out);

/* Rotary embedding in place, HF rotate_half convention, on the first rotary_dim of each head.
 * x [T, heads, head_dim] f32, positions [T] i32, inv_freq [rotary_dim/2] f32.
 * cos/sin are multiplied by attention_scaling (1 for default rope; yarn/llama3 set it). */
lm_status lm_rope(lm_tensor* x, const lm_tensor* positions, const lm_tensor* inv_freq, int32_t rotary_dim,
                  float attention_scaling);

typedef enum { LM_ROPE_DEFAULT = 0, LM_ROPE_LINEAR = 1, LM_ROPE_DYNAMIC = 2, LM_ROPE_LLAMA3 = 3, LM_ROPE_YARN = 4 } lm_rope_type;

typedef struct {
  lm_rope_type type;
  double base;                 /* rope_theta */
  int32_t rotary_dim;          /* head_dim * partial_rotary_factor */
  double factor;               /* linear, dynamic, llama3, yarn */
  int32_t max_position_embeddings;
  int32_t original_max_position_embeddings; /* llama3, yarn; 0 = max_position_embeddings */
  double low_freq_factor, high_freq_factor; /* llama3 */
  double beta_fast, beta_slow;              /* yarn; 0 = defaults 32 and 1 */
  double mscale, mscale_all_dim;            /* yarn; 0 = unset */
  double attention_factor;                  /* yarn; 0 = derived */
  int32_t truncate;                         /* yarn; 1 = HF default */
} lm_rope_config;

/* inv_freq (rotary_dim/2 floats) and the attention scaling for a rope configuration, as Hugging Face
 * computes them. seq_len matters only for dynamic NTK (the longest sequence in the batch). */
lm_status lm_rope_inv_freq(const lm_rope_config* config, int64_t seq_len, float* inv_freq_out,
                           float* attention_scaling_out);

/* out = x · Wᵀ (+ bias). x [T,K] f32, W [N,K] f32|bf16, bias [N] f32 or NULL, out [T,N] f32. */
lm_status lm_matmul(const lm_tensor* x, const lm_tensor* w, const lm_tensor* bias, lm_tensor* out);

/* Writes k,v [T, kv_heads, head_dim] f32 into a paged cache [blocks, block_size, kv_heads, head_dim]
 * (f32|bf16) at slot_mapping[t] = block * block_size + offset (-1 = skip). */
lm_status lm_kv_cache_write(const lm_tensor* k, const lm_tensor* v, lm_tensor* k_cache, lm_tensor* v_cache,
                            const lm_tensor* slot_mapping);

/* Causal grouped-query attention over a paged KV cache for a batch mixing prefill and decode:
 * q [T, heads, head_dim] f32; token t belongs to sequence token_seq[t] and sits at position
 * token_pos[t]; it attends to that sequence's cached keys at positions max(0, pos-window+1)..pos
 * (window 0 = unlimited). block_tables [num_seqs, max_blocks] i32. out [T, heads*head_dim] f32. */
lm_status lm_attention(const lm_tensor* q, const lm_tensor* k_cache, const lm_tensor* v_cache,
                       const lm_tensor* block_tables, const lm_tensor* token_seq, const lm_tensor* token_pos,
                       float scale, int32_t sliding_window, lm_tensor* out);

/* out[t,i] = silu(gu[t,i]) * gu[t,I+i]. gu [T, 2I] f32 (gate then up), out [T, I] f32. */
lm_status lm_silu_mul(const lm_tensor* gate_up, lm_tensor* out);

/* Mixtral routing: softmax over experts (fp32), top-k (ties: lower index), optionally renormalised.
 * logits [T,E] f32 -> experts [T,k] i32, weights [T,k] f32. */
lm_status lm_moe_route(const lm_tensor* logits, int32_t top_k, int32_t renormalize, lm_tensor* experts,
                       lm_tensor* weights);

/* a += b, both f32 of equal shape. */
lm_status lm_add(lm_tensor* a, const lm_tensor* b);

/* Logits helpers. argmax [T] i32 of logits [T,V] (ties: lower index). */
lm_status lm_argmax(const lm_tensor* logits, lm_tensor* out);
/* The k largest values of each row, sorted descending (ties: lower index): indices [T,k] i32,
 * values [T,k] f32. */
lm_status lm_topk(const lm_tensor* logits, int32_t k, lm_tensor* indices, lm_tensor* values);

/* ---- batched heterogeneous-rank LoRA ---- */

/*
 * Adapter weights for one LoRA site, at true rank, behind an offset table.
 * The site has n_slices slices sharing the input (q,k,v: 3; gate,up: 2; o or down: 1) of widths
 * slice_width[s]; their deltas are concatenated in y. Each key k (an adapter slot, or for MoE
 * slot*n_experts + expert) has, for each slice s, at index [k*n_slices + s]:
 *   rank     i32: r (0 = the key does not touch this slice),
 *   scale    f32: alpha/r or alpha/sqrt(r),
 *   a_offset i64: element offset of A [r, h_in] in a_pool,
 *   b_offset i64: element offset of B [slice_width[s], r] in b_pool.
 * The pools share a dtype (f32 or bf16); pools and tables live on one device.
 * b_transposed 1 (CPU only): every B is stored transposed, [r, slice_width[s]] (k-major), which
 * the CPU expand streams faster at decode; same size and offsets. 0: the layout above.
 */
#define LM_LORA_MAX_SLICES 4
typedef struct {
  const lm_tensor* a_pool;
  const lm_tensor* b_pool;
  int32_t n_keys;
  int32_t n_slices;
  int32_t slice_width[LM_LORA_MAX_SLICES];
  const lm_tensor* rank;     /* [n_keys*n_slices] i32 */
  const lm_tensor* scale;    /* [n_keys*n_slices] f32 */
  const lm_tensor* a_offset; /* [n_keys*n_slices] i64 */
  const lm_tensor* b_offset; /* [n_keys*n_slices] i64 */
  int32_t max_rank;          /* upper bound of every rank; at most LM_LORA_MAX_RANK */
  int32_t b_transposed;      /* 1: B pools k-major (see above); CPU only */
} lm_lora_weights;

#define LM_LORA_MAX_RANK 256

/* Dense site: y[t, slice s] += scale · B·(A·x[t]) for the key token_slot[t] (-1 = none).
 * x [T, h_in] f32|bf16, token_slot [T] i32, y [T, Σ widths] f32. */
lm_status lm_lora_apply(const lm_lora_weights* weights, const lm_tensor* x, const lm_tensor* token_slot,
                        lm_tensor* y);

/* MoE site over R routed token-expert rows: row r reads x[row_token[r]] (row_token NULL: x[r]), uses
 * key row_slot[r]*n_experts + row_expert[r] (row_slot -1 = none) and adds
 * row_weight[r] (NULL: 1) · scale · B·(A·x) to y[r]. row_* are [R] i32 (weight f32); y [R, Σ widths]. */
lm_status lm_lora_apply_moe(const lm_lora_weights* weights, int32_t n_experts, const lm_tensor* x,
                            const lm_tensor* row_token, const lm_tensor* row_slot, const lm_tensor* row_expert,
                            const lm_tensor* row_weight, lm_tensor* y);

#ifdef __cplusplus
}
#endif

#endif
