// The C ABI: checks every argument (a bad shape, dtype, slot or device is a status with a message,
// never a crash), then runs the CPU or CUDA implementation chosen by the tensors' device.
#include <string>

#include "common.h"
#include "ops.h"
#include "simd.h"
#include "threads.h"

namespace lm {
const char* last_error_message();
}

using lm::check_tensor;
using lm::fail;
using lm::numel;
using lm::shape_string;

#define LM_TRY(expr)                     \
  do {                                   \
    lm_status _s = (expr);               \
    if (_s != LM_OK) return _s;          \
  } while (0)

namespace {

std::string str(int64_t v) { return std::to_string(v); }

#ifdef LM_WITH_CUDA
lm_status use_device(const lm_tensor* t) { return lm::cuda::set_device(t->device_index); }
#define LM_DISPATCH(device, first, cpu_call, cuda_call) \
  do {                                                  \
    if ((device) == LM_CPU) {                           \
      cpu_call;                                         \
      return LM_OK;                                     \
    }                                                   \
    LM_TRY(use_device(first));                          \
    return (cuda_call);                                 \
  } while (0)
#else
#define LM_DISPATCH(device, first, cpu_call, cuda_call)                                          \
  do {                                                                                           \
    if ((device) == LM_CPU) {                                                                    \
      cpu_call;                                                                                  \
      return LM_OK;                                                                              \
    }                                                                                            \
    return fail(LM_ERR_DEVICE, "this build of the loramesh core has no CUDA support");           \
  } while (0)
#endif

lm_status check_index_range(const int32_t* values, int64_t n, int64_t lo, int64_t hi, const char* what) {
  for (int64_t i = 0; i < n; i++) {
    if (values[i] < lo || values[i] >= hi) {
      return fail(LM_ERR_SLOT, std::string(what) + "[" + str(i) + "] = " + str(values[i]) + " is outside [" + str(lo) +
                                   ", " + str(hi) + ")");
    }
  }
  return LM_OK;
}

}  // namespace

extern "C" {

const char* lm_last_error(void) { return lm::last_error_message(); }
const char* lm_version(void) { return "loramesh-core 0.1.0"; }

lm_status lm_set_num_threads(int32_t n) {
  if (n < 0 || n > 64) return fail(LM_ERR_ARGUMENT, "thread count must be between 0 and 64");
  lm::set_num_threads(n);
  return LM_OK;
}
int32_t lm_get_num_threads(void) { return lm::num_threads(); }
int32_t lm_simd_enabled(void) { return lm::simd::enabled() ? 1 : 0; }
lm_status lm_set_simd(int32_t enabled) {
  if (enabled && !lm::simd::cpu_has_avx2()) return fail(LM_ERR_ARGUMENT, "this CPU has no AVX2/FMA");
  lm::simd::set_enabled(enabled != 0);
  return LM_OK;
}

#ifdef LM_WITH_CUDA
int32_t lm_cuda_built(void) { return 1; }
int32_t lm_cuda_device_count(void) { return lm::cuda::device_count(); }
lm_status lm_cuda_malloc(int32_t device, size_t bytes, void** out) {
  if (out == nullptr) return fail(LM_ERR_ARGUMENT, "out is required");
  LM_TRY(lm::cuda::set_device(device));
  return lm::cuda::malloc_device(bytes, out);
}
lm_status lm_cuda_free(int32_t device, void* ptr) {
  LM_TRY(lm::cuda::set_device(device));
  return lm::cuda::free_device(ptr);
}
lm_status lm_cuda_memcpy_h2d(int32_t device, void* dst, const void* src, size_t bytes) {
  LM_TRY(lm::cuda::set_device(device));
  return lm::cuda::memcpy_h2d(dst, src, bytes);
}
lm_status lm_cuda_memcpy_d2h(int32_t device, void* dst, const void* src, size_t bytes) {
  LM_TRY(lm::cuda::set_device(device));
  return lm::cuda::memcpy_d2h(dst, src, bytes);
}
lm_status lm_cuda_synchronize(int32_t device) {
  LM_TRY(lm::cuda::set_device(device));
  return lm::cuda::synchronize();
}
#else
int32_t lm_cuda_built(void) { return 0; }
int32_t lm_cuda_device_count(void) { return 0; }
static lm_status no_cuda() { return fail(LM_ERR_DEVICE, "this build of the loramesh core has no CUDA support"); }
lm_status lm_cuda_malloc(int32_t, size_t, void**) { return no_cuda(); }
lm_status lm_cuda_free(int32_t, void*) { return no_cuda(); }
lm_status lm_cuda_memcpy_h2d(int32_t, void*, const void*, size_t) { return no_cuda(); }
lm_status lm_cuda_memcpy_d2h(int32_t, void*, const void*, size_t) { return no_cuda(); }
lm_status lm_cuda_synchronize(int32_t) { return no_cuda(); }
#endif

lm_status lm_embedding(const lm_tensor* table, const lm_tensor* ids, lm_tensor* out) {
  LM_TRY(check_tensor(table, "embedding table", 2, {LM_F32, LM_BF16}));
  LM_TRY(check_tensor(ids, "ids", 1, {LM_I32}));
  LM_TRY(check_tensor(out, "out", 2, {LM_F32}));
  lm_device device;
  LM_TRY(lm::check_same_device("embedding", {table, ids, out}, &device));
  const int64_t tokens = ids->shape[0], hidden = table->shape[1];
  if (out->shape[0] != tokens || out->shape[1] != hidden) {
    return fail(LM_ERR_SHAPE, "embedding: out must be [" + str(tokens) + ", " + str(hidden) + "], got " + shape_string(*out));
  }
  if (device == LM_CPU) LM_TRY(check_index_range(static_cast<const int32_t*>(ids->data), tokens, 0, table->shape[0], "token id"));
  LM_DISPATCH(device, table, lm::cpu::embedding(table->data, table->dtype, hidden, static_cast<const int32_t*>(ids->data), tokens, static_cast<float*>(out->data)),
              lm::cuda::embedding(table->data, table->dtype, hidden, static_cast<const int32_t*>(ids->data), tokens, static_cast<float*>(out->data)));
}

lm_status lm_rmsnorm(const lm_tensor* x, const lm_tensor* weight, float eps, lm_tensor* out) {
  LM_TRY(check_tensor(x, "x", 2, {LM_F32}));
  LM_TRY(check_tensor(weight, "weight", 1, {LM_F32, LM_BF16}));
  LM_TRY(check_tensor(out, "out", 2, {LM_F32}));
  lm_device device;
  LM_TRY(lm::check_same_device("rmsnorm", {x, weight, out}, &device));
  if (weight->shape[0] != x->shape[1] || out->shape[0] != x->shape[0] || out->shape[1] != x->shape[1]) {
    return fail(LM_ERR_SHAPE, "rmsnorm: x " + shape_string(*x) + ", weight " + shape_string(*weight) + " and out " + shape_string(*out) + " do not fit");
  }
  if (!(eps > 0)) return fail(LM_ERR_ARGUMENT, "rmsnorm: eps must be positive");
  LM_DISPATCH(device, x, lm::cpu::rmsnorm(static_cast<const float*>(x->data), weight->data, weight->dtype, x->shape[0], x->shape[1], eps, static_cast<float*>(out->data)),
              lm::cuda::rmsnorm(static_cast<const float*>(x->data), weight->data, weight->dtype, x->shape[0], x->shape[1], eps, static_cast<float*>(out->data)));
}

lm_status lm_rope(lm_tensor* x, const lm_tensor* positions, const lm_tensor* inv_freq, int32_t rotary_dim,
                  float attention_scaling) {
  LM_TRY(check_tensor(x, "x", 3, {LM_F32}));
  LM_TRY(check_tensor(positions, "positions", 1, {LM_I32}));
  LM_TRY(check_tensor(inv_freq, "inv_freq", 1, {LM_F32}));
  lm_device device;
  LM_TRY(lm::check_same_device("rope", {x, positions, inv_freq}, &device));
  if (rotary_dim <= 0 || rotary_dim % 2 != 0 || rotary_dim > x->shape[2]) {
    return fail(LM_ERR_ARGUMENT, "rope: rotary_dim must be even and at most head_dim " + str(x->shape[2]));
  }
  if (positions->shape[0] != x->shape[0]) return fail(LM_ERR_SHAPE, "rope: one position per token is needed");
  if (inv_freq->shape[0] != rotary_dim / 2) return fail(LM_ERR_SHAPE, "rope: inv_freq must have rotary_dim/2 entries");
  if (device == LM_CPU) LM_TRY(check_index_range(static_cast<const int32_t*>(positions->data), positions->shape[0], 0, INT32_MAX, "position"));
  LM_DISPATCH(device, x, lm::cpu::rope(static_cast<float*>(x->data), x->shape[0], x->shape[1], x->shape[2], static_cast<const int32_t*>(positions->data), static_cast<const float*>(inv_freq->data), rotary_dim, attention_scaling),
              lm::cuda::rope(static_cast<float*>(x->data), x->shape[0], x->shape[1], x->shape[2], static_cast<const int32_t*>(positions->data), static_cast<const float*>(inv_freq->data), rotary_dim, attention_scaling));
}

lm_status lm_matmul(const lm_tensor* x, const lm_tensor* w, const lm_tensor* bias, lm_tensor* out) {
  LM_TRY(check_tensor(x, "x", 2, {LM_F32}));
  LM_TRY(check_tensor(w, "weight", 2, {LM_F32, LM_BF16}));
  if (bias) LM_TRY(check_tensor(bias, "bias", 1, {LM_F32}));
  LM_TRY(check_tensor(out, "out", 2, {LM_F32}));
  lm_device device;
  LM_TRY(lm::check_same_device("matmul", {x, w, bias, out}, &device));
  const int64_t t = x->shape[0], k = x->shape[1], n = w->shape[0];
  if (w->shape[1] != k) return fail(LM_ERR_SHAPE, "matmul: x " + shape_string(*x) + " does not fit weight " + shape_string(*w));
  if (bias && bias->shape[0] != n) return fail(LM_ERR_SHAPE, "matmul: bias must have " + str(n) + " entries");
  if (out->shape[0] != t || out->shape[1] != n) return fail(LM_ERR_SHAPE, "matmul: out must be [" + str(t) + ", " + str(n) + "], got " + shape_string(*out));
  const float* b = bias ? static_cast<const float*>(bias->data) : nullptr;
  LM_DISPATCH(device, x, lm::cpu::matmul(static_cast<const float*>(x->data), w->data, w->dtype, b, t, k, n, static_cast<float*>(out->data)),
              lm::cuda::matmul(static_cast<const float*>(x->data), w->data, w->dtype, b, t, k, n, static_cast<float*>(out->data)));
}

lm_status lm_kv_cache_write(const lm_tensor* k, const lm_tensor* v, lm_tensor* k_cache, lm_tensor* v_cache,
                            const lm_tensor* slot_mapping) {
  LM_TRY(check_tensor(k, "k", 3, {LM_F32}));
  LM_TRY(check_tensor(v, "v", 3, {LM_F32}));
  LM_TRY(check_tensor(k_cache, "k_cache", 4, {LM_F32, LM_BF16}));
  LM_TRY(check_tensor(v_cache, "v_cache", 4, {LM_F32, LM_BF16}));
  LM_TRY(check_tensor(slot_mapping, "slot_mapping", 1, {LM_I32}));
  lm_device device;
  LM_TRY(lm::check_same_device("kv_cache_write", {k, v, k_cache, v_cache, slot_mapping}, &device));
  for (int i = 0; i < 3; i++) {
    if (k->shape[i] != v->shape[i]) return fail(LM_ERR_SHAPE, "kv_cache_write: k and v shapes differ");
  }
  for (int i = 0; i < 4; i++) {
    if (k_cache->shape[i] != v_cache->shape[i]) return fail(LM_ERR_SHAPE, "kv_cache_write: cache shapes differ");
  }
  if (k_cache->dtype != v_cache->dtype) return fail(LM_ERR_DTYPE, "kv_cache_write: caches must share a dtype");
  if (k_cache->shape[2] != k->shape[1] || k_cache->shape[3] != k->shape[2]) {
    return fail(LM_ERR_SHAPE, "kv_cache_write: k " + shape_string(*k) + " does not fit cache " + shape_string(*k_cache));
  }
  if (slot_mapping->shape[0] != k->shape[0]) return fail(LM_ERR_SHAPE, "kv_cache_write: one slot per token is needed");
  const int64_t slots = k_cache->shape[0] * k_cache->shape[1];
  if (device == LM_CPU) LM_TRY(check_index_range(static_cast<const int32_t*>(slot_mapping->data), k->shape[0], -1, slots, "slot"));
  lm::KvWriteArgs a{static_cast<const float*>(k->data), static_cast<const float*>(v->data), k_cache->data, v_cache->data,
                    k_cache->dtype, static_cast<const int32_t*>(slot_mapping->data), k->shape[0], k->shape[1] * k->shape[2]};
  LM_DISPATCH(device, k, lm::cpu::kv_cache_write(a), lm::cuda::kv_cache_write(a));
}

lm_status lm_attention(const lm_tensor* q, const lm_tensor* k_cache, const lm_tensor* v_cache,
                       const lm_tensor* block_tables, const lm_tensor* token_seq, const lm_tensor* token_pos,
                       float scale, int32_t sliding_window, lm_tensor* out) {
  LM_TRY(check_tensor(q, "q", 3, {LM_F32}));
  LM_TRY(check_tensor(k_cache, "k_cache", 4, {LM_F32, LM_BF16}));
  LM_TRY(check_tensor(v_cache, "v_cache", 4, {LM_F32, LM_BF16}));
  LM_TRY(check_tensor(block_tables, "block_tables", 2, {LM_I32}));
  LM_TRY(check_tensor(token_seq, "token_seq", 1, {LM_I32}));
  LM_TRY(check_tensor(token_pos, "token_pos", 1, {LM_I32}));
  LM_TRY(check_tensor(out, "out", 2, {LM_F32}));
  lm_device device;
  LM_TRY(lm::check_same_device("attention", {q, k_cache, v_cache, block_tables, token_seq, token_pos, out}, &device));
  const int64_t tokens = q->shape[0], heads = q->shape[1], d = q->shape[2];
  const int64_t kv_heads = k_cache->shape[2], block_size = k_cache->shape[1];
  for (int i = 0; i < 4; i++) {
    if (k_cache->shape[i] != v_cache->shape[i]) return fail(LM_ERR_SHAPE, "attention: cache shapes differ");
  }
  if (k_cache->dtype != v_cache->dtype) return fail(LM_ERR_DTYPE, "attention: caches must share a dtype");
  if (k_cache->shape[3] != d) return fail(LM_ERR_SHAPE, "attention: cache head_dim differs from q's");
  if (kv_heads == 0 || heads % kv_heads != 0) {
    return fail(LM_ERR_SHAPE, "attention: " + str(heads) + " query heads are not a multiple of " + str(kv_heads) + " kv heads");
  }
  if (token_seq->shape[0] != tokens || token_pos->shape[0] != tokens) return fail(LM_ERR_SHAPE, "attention: token_seq and token_pos need one entry per token");
  if (out->shape[0] != tokens || out->shape[1] != heads * d) return fail(LM_ERR_SHAPE, "attention: out must be [" + str(tokens) + ", " + str(heads * d) + "]");
  if (sliding_window < 0) return fail(LM_ERR_ARGUMENT, "attention: sliding_window must be >= 0");
  if (block_size <= 0) return fail(LM_ERR_SHAPE, "attention: block_size must be positive");
  const int64_t seqs = block_tables->shape[0], max_blocks = block_tables->shape[1];
  if (device == LM_CPU) {
    const auto* seq = static_cast<const int32_t*>(token_seq->data);
    const auto* pos = static_cast<const int32_t*>(token_pos->data);
    const auto* tables = static_cast<const int32_t*>(block_tables->data);
    LM_TRY(check_index_range(seq, tokens, 0, seqs, "token_seq"));
    for (int64_t t = 0; t < tokens; t++) {
      if (pos[t] < 0 || pos[t] / block_size >= max_blocks) {
        return fail(LM_ERR_SLOT, "attention: position " + str(pos[t]) + " of token " + str(t) + " is outside its block table");
      }
      for (int64_t b = 0; b <= pos[t] / block_size; b++) {
        const int32_t block = tables[seq[t] * max_blocks + b];
        if (block < 0 || block >= k_cache->shape[0]) {
          return fail(LM_ERR_SLOT, "attention: block table of sequence " + str(seq[t]) + " names block " + str(block) + " outside the cache");
        }
      }
    }
  }
  lm::AttentionArgs a{static_cast<const float*>(q->data), k_cache->data, v_cache->data, k_cache->dtype,
                      static_cast<const int32_t*>(block_tables->data), static_cast<const int32_t*>(token_seq->data),
                      static_cast<const int32_t*>(token_pos->data), tokens, heads, kv_heads, d, block_size, max_blocks,
                      k_cache->shape[0], scale, sliding_window, static_cast<float*>(out->data)};
  LM_DISPATCH(device, q, lm::cpu::attention(a), lm::cuda::attention(a));
}

lm_status lm_silu_mul(const lm_tensor* gate_up, lm_tensor* out) {
  LM_TRY(check_tensor(gate_up, "gate_up", 2, {LM_F32}));
  LM_TRY(check_tensor(out, "out", 2, {LM_F32}));
  lm_device device;
  LM_TRY(lm::check_same_device("silu_mul", {gate_up, out}, &device));
  if (gate_up->shape[1] % 2 != 0 || out->shape[0] != gate_up->shape[0] || out->shape[1] * 2 != gate_up->shape[1]) {
    return fail(LM_ERR_SHAPE, "silu_mul: gate_up " + shape_string(*gate_up) + " must be [T, 2I] and out [T, I], got " + shape_string(*out));
  }
  LM_DISPATCH(device, gate_up, lm::cpu::silu_mul(static_cast<const float*>(gate_up->data), out->shape[0], out->shape[1], static_cast<float*>(out->data)),
              lm::cuda::silu_mul(static_cast<const float*>(gate_up->data), out->shape[0], out->shape[1], static_cast<float*>(out->data)));
}

lm_status lm_moe_route(const lm_tensor* logits, int32_t top_k, int32_t renormalize, lm_tensor* experts,
                       lm_tensor* weights) {
  LM_TRY(check_tensor(logits, "router logits", 2, {LM_F32}));
  LM_TRY(check_tensor(experts, "experts", 2, {LM_I32}));
  LM_TRY(check_tensor(weights, "weights", 2, {LM_F32}));
  lm_device device;
  LM_TRY(lm::check_same_device("moe_route", {logits, experts, weights}, &device));
  if (top_k <= 0 || top_k > logits->shape[1]) return fail(LM_ERR_ARGUMENT, "moe_route: top_k must be between 1 and the expert count");
  for (const lm_tensor* t : {static_cast<const lm_tensor*>(experts), static_cast<const lm_tensor*>(weights)}) {
    if (t->shape[0] != logits->shape[0] || t->shape[1] != top_k) return fail(LM_ERR_SHAPE, "moe_route: outputs must be [T, top_k]");
  }
  LM_DISPATCH(device, logits, lm::cpu::moe_route(static_cast<const float*>(logits->data), logits->shape[0], logits->shape[1], top_k, renormalize != 0, static_cast<int32_t*>(experts->data), static_cast<float*>(weights->data)),
              lm::cuda::moe_route(static_cast<const float*>(logits->data), logits->shape[0], logits->shape[1], top_k, renormalize != 0, static_cast<int32_t*>(experts->data), static_cast<float*>(weights->data)));
}

lm_status lm_add(lm_tensor* a, const lm_tensor* b) {
  if (a == nullptr || b == nullptr) return fail(LM_ERR_ARGUMENT, "add: both tensors are required");
  LM_TRY(check_tensor(a, "a", a->ndim, {LM_F32}));
  LM_TRY(check_tensor(b, "b", a->ndim, {LM_F32}));
  lm_device device;
  LM_TRY(lm::check_same_device("add", {a, b}, &device));
  for (int i = 0; i < a->ndim; i++) {
    if (a->shape[i] != b->shape[i]) return fail(LM_ERR_SHAPE, "add: shapes " + shape_string(*a) + " and " + shape_string(*b) + " differ");
  }
  LM_DISPATCH(device, a, lm::cpu::add(static_cast<float*>(a->data), static_cast<const float*>(b->data), numel(*a)),
              lm::cuda::add(static_cast<float*>(a->data), static_cast<const float*>(b->data), numel(*a)));
}

lm_status lm_argmax(const lm_tensor* logits, lm_tensor* out) {
  LM_TRY(check_tensor(logits, "logits", 2, {LM_F32}));
  LM_TRY(check_tensor(out, "out", 1, {LM_I32}));
  lm_device device;
  LM_TRY(lm::check_same_device("argmax", {logits, out}, &device));
  if (out->shape[0] != logits->shape[0] || logits->shape[1] == 0) return fail(LM_ERR_SHAPE, "argmax: out needs one entry per row of a non-empty vocabulary");
  LM_DISPATCH(device, logits, lm::cpu::argmax(static_cast<const float*>(logits->data), logits->shape[0], logits->shape[1], static_cast<int32_t*>(out->data)),
              lm::cuda::argmax(static_cast<const float*>(logits->data), logits->shape[0], logits->shape[1], static_cast<int32_t*>(out->data)));
}

lm_status lm_topk(const lm_tensor* logits, int32_t k, lm_tensor* indices, lm_tensor* values) {
  LM_TRY(check_tensor(logits, "logits", 2, {LM_F32}));
  LM_TRY(check_tensor(indices, "indices", 2, {LM_I32}));
  LM_TRY(check_tensor(values, "values", 2, {LM_F32}));
  lm_device device;
  LM_TRY(lm::check_same_device("topk", {logits, indices, values}, &device));
  if (k <= 0 || k > logits->shape[1]) return fail(LM_ERR_ARGUMENT, "topk: k must be between 1 and the vocabulary size");
  for (const lm_tensor* t : {static_cast<const lm_tensor*>(indices), static_cast<const lm_tensor*>(values)}) {
    if (t->shape[0] != logits->shape[0] || t->shape[1] != k) return fail(LM_ERR_SHAPE, "topk: outputs must be [rows, k]");
  }
  LM_DISPATCH(device, logits, lm::cpu::topk(static_cast<const float*>(logits->data), logits->shape[0], logits->shape[1], k, static_cast<int32_t*>(indices->data), static_cast<float*>(values->data)),
              lm::cuda::topk(static_cast<const float*>(logits->data), logits->shape[0], logits->shape[1], k, static_cast<int32_t*>(indices->data), static_cast<float*>(values->data)));
}

}  // extern "C"

// ---- LoRA ----

namespace {

lm_status check_lora_weights(const lm_lora_weights* w, int64_t h_in, lm::LoraArgs* a, lm_device* device) {
  if (w == nullptr) return fail(LM_ERR_ARGUMENT, "lora: weights are required");
  if (w->n_slices < 1 || w->n_slices > LM_LORA_MAX_SLICES) return fail(LM_ERR_ARGUMENT, "lora: n_slices must be 1 to 4");
  if (w->n_keys < 0) return fail(LM_ERR_ARGUMENT, "lora: n_keys must be >= 0");
  if (w->max_rank < 0 || w->max_rank > LM_LORA_MAX_RANK) return fail(LM_ERR_ARGUMENT, "lora: max_rank must be at most " + std::to_string(LM_LORA_MAX_RANK));
  LM_TRY(check_tensor(w->a_pool, "lora A pool", 1, {LM_F32, LM_BF16}));
  LM_TRY(check_tensor(w->b_pool, "lora B pool", 1, {LM_F32, LM_BF16}));
  if (w->a_pool->dtype != w->b_pool->dtype) return fail(LM_ERR_DTYPE, "lora: A and B pools must share a dtype");
  const int64_t entries = static_cast<int64_t>(w->n_keys) * w->n_slices;
  LM_TRY(check_tensor(w->rank, "lora rank table", 1, {LM_I32}));
  LM_TRY(check_tensor(w->scale, "lora scale table", 1, {LM_F32}));
  LM_TRY(check_tensor(w->a_offset, "lora A offset table", 1, {LM_I64}));
  LM_TRY(check_tensor(w->b_offset, "lora B offset table", 1, {LM_I64}));
  for (const lm_tensor* t : {w->rank, w->scale, w->a_offset, w->b_offset}) {
    if (t->shape[0] != entries) return fail(LM_ERR_SHAPE, "lora: tables must have n_keys*n_slices = " + str(entries) + " entries");
  }
  LM_TRY(lm::check_same_device("lora", {w->a_pool, w->b_pool, w->rank, w->scale, w->a_offset, w->b_offset}, device));
  int32_t column = 0;
  for (int s = 0; s < w->n_slices; s++) {
    if (w->slice_width[s] <= 0) return fail(LM_ERR_ARGUMENT, "lora: slice widths must be positive");
    a->slice_width[s] = w->slice_width[s];
    a->slice_offset[s] = column;
    column += w->slice_width[s];
  }
  a->n_out = column;
  a->a_pool = w->a_pool->data;
  a->b_pool = w->b_pool->data;
  a->weight_dtype = w->a_pool->dtype;
  a->n_keys = w->n_keys;
  a->n_slices = w->n_slices;
  a->rank = static_cast<const int32_t*>(w->rank->data);
  a->scale = static_cast<const float*>(w->scale->data);
  a->a_offset = static_cast<const int64_t*>(w->a_offset->data);
  a->b_offset = static_cast<const int64_t*>(w->b_offset->data);
  a->max_rank = w->max_rank;
  if (w->b_transposed != 0 && w->b_transposed != 1) return fail(LM_ERR_ARGUMENT, "lora: b_transposed must be 0 or 1");
  if (w->b_transposed && *device != LM_CPU) return fail(LM_ERR_DEVICE, "lora: transposed B pools are CPU-only");
  a->b_transposed = w->b_transposed == 1;
  if (*device == LM_CPU) {
    // The tables are readable here: prove every (key, slice) stays inside its pool.
    for (int64_t e = 0; e < entries; e++) {
      const int64_t r = a->rank[e];
      if (r < 0 || r > w->max_rank) return fail(LM_ERR_ARGUMENT, "lora: rank " + str(r) + " at entry " + str(e) + " is outside [0, max_rank " + str(w->max_rank) + "]");
      if (r == 0) continue;
      const int64_t width = w->slice_width[e % w->n_slices];
      if (a->a_offset[e] < 0 || a->a_offset[e] + r * h_in > numel(*w->a_pool)) return fail(LM_ERR_SHAPE, "lora: A of entry " + str(e) + " lies outside the A pool");
      if (a->b_offset[e] < 0 || a->b_offset[e] + width * r > numel(*w->b_pool)) return fail(LM_ERR_SHAPE, "lora: B of entry " + str(e) + " lies outside the B pool");
    }
  }
  return LM_OK;
}

lm_status run_lora(const lm::LoraArgs& a, lm_device device, const lm_tensor* first) {
  (void)first;  // names the CUDA device in CUDA builds
  LM_DISPATCH(device, first, lm::cpu::lora(a), lm::cuda::lora(a));
}

}  // namespace

namespace lm {
lm_status lora_args(const lm_lora_weights* weights, const lm_tensor* x, const lm_tensor* token_slot, lm_tensor* y,
                    LoraArgs* out, lm_device* device_out) {
  LM_TRY(check_tensor(x, "x", 2, {LM_F32, LM_BF16}));
  LM_TRY(check_tensor(token_slot, "token_slot", 1, {LM_I32}));
  LM_TRY(check_tensor(y, "y", 2, {LM_F32}));
  lm::LoraArgs a{};
  lm_device device;
  LM_TRY(check_lora_weights(weights, x->shape[1], &a, &device));
  lm_device io_device;
  LM_TRY(lm::check_same_device("lora", {weights->a_pool, x, token_slot, y}, &io_device));
  const int64_t tokens = x->shape[0];
  if (token_slot->shape[0] != tokens) return fail(LM_ERR_SHAPE, "lora: token_slot needs one entry per token (" + str(tokens) + ")");
  if (y->shape[0] != tokens || y->shape[1] != a.n_out) {
    return fail(LM_ERR_SHAPE, "lora: y must be [" + str(tokens) + ", " + str(a.n_out) + "] (sum of slice widths), got " + shape_string(*y));
  }
  const auto* slots = static_cast<const int32_t*>(token_slot->data);
  if (device == LM_CPU) LM_TRY(check_index_range(slots, tokens, -1, weights->n_keys, "token_slot"));
  a.x = x->data;
  a.x_dtype = x->dtype;
  a.x_rows = tokens;
  a.h_in = x->shape[1];
  a.rows = tokens;
  a.n_experts = 1;
  a.row_slot = slots;
  a.y = static_cast<float*>(y->data);
  *out = a;
  *device_out = device;
  return LM_OK;
}
}  // namespace lm

extern "C" lm_status lm_lora_apply(const lm_lora_weights* weights, const lm_tensor* x, const lm_tensor* token_slot,
                                   lm_tensor* y) {
  lm::LoraArgs a{};
  lm_device device;
  LM_TRY(lm::lora_args(weights, x, token_slot, y, &a, &device));
  return run_lora(a, device, x);
}

extern "C" lm_status lm_lora_apply_moe(const lm_lora_weights* weights, int32_t n_experts, const lm_tensor* x,
                                       const lm_tensor* row_token, const lm_tensor* row_slot,
                                       const lm_tensor* row_expert, const lm_tensor* row_weight, lm_tensor* y) {
  LM_TRY(check_tensor(x, "x", 2, {LM_F32, LM_BF16}));
  LM_TRY(check_tensor(row_slot, "row_slot", 1, {LM_I32}));
  LM_TRY(check_tensor(row_expert, "row_expert", 1, {LM_I32}));
  if (row_token) LM_TRY(check_tensor(row_token, "row_token", 1, {LM_I32}));
  if (row_weight) LM_TRY(check_tensor(row_weight, "row_weight", 1, {LM_F32}));
  LM_TRY(check_tensor(y, "y", 2, {LM_F32}));
  if (n_experts < 1) return fail(LM_ERR_ARGUMENT, "lora moe: n_experts must be >= 1");
  lm::LoraArgs a{};
  lm_device device;
  LM_TRY(check_lora_weights(weights, x->shape[1], &a, &device));
  if (weights->n_keys % n_experts != 0) return fail(LM_ERR_ARGUMENT, "lora moe: n_keys must be slots * n_experts");
  lm_device io_device;
  LM_TRY(lm::check_same_device("lora moe", {weights->a_pool, x, row_token, row_slot, row_expert, row_weight, y}, &io_device));
  const int64_t rows = row_slot->shape[0];
  for (const lm_tensor* t : {row_token, row_expert, row_weight}) {
    if (t && t->shape[0] != rows) return fail(LM_ERR_SHAPE, "lora moe: row arrays must all have " + str(rows) + " entries");
  }
  if (!row_token && x->shape[0] != rows) return fail(LM_ERR_SHAPE, "lora moe: without row_token, x needs one row per routed row");
  if (y->shape[0] != rows || y->shape[1] != a.n_out) {
    return fail(LM_ERR_SHAPE, "lora moe: y must be [" + str(rows) + ", " + str(a.n_out) + "], got " + shape_string(*y));
  }
  if (device == LM_CPU) {
    LM_TRY(check_index_range(static_cast<const int32_t*>(row_slot->data), rows, -1, weights->n_keys / n_experts, "row_slot"));
    LM_TRY(check_index_range(static_cast<const int32_t*>(row_expert->data), rows, 0, n_experts, "row_expert"));
    if (row_token) LM_TRY(check_index_range(static_cast<const int32_t*>(row_token->data), rows, 0, x->shape[0], "row_token"));
  }
  a.x = x->data;
  a.x_dtype = x->dtype;
  a.x_rows = x->shape[0];
  a.h_in = x->shape[1];
  a.rows = rows;
  a.n_experts = n_experts;
  a.row_token = row_token ? static_cast<const int32_t*>(row_token->data) : nullptr;
  a.row_slot = static_cast<const int32_t*>(row_slot->data);
  a.row_expert = static_cast<const int32_t*>(row_expert->data);
  a.row_weight = row_weight ? static_cast<const float*>(row_weight->data) : nullptr;
  a.y = static_cast<float*>(y->data);
  return run_lora(a, device, x);
}
