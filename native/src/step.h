// The native step (issue 13): one call runs a whole forward pass of a batch that mixes prefill
// chunks and decode tokens of many sequences, each with its own adapter or none, and returns the
// logits asked for. It runs the same core ops in the same order as the per-op path it replaces, so
// results are bit-identical; LoRA sites go through a SiteBackend (post before the base matmul,
// wait after it, add the delta).
#pragma once

#include <cstdint>
#include <vector>

#include "loramesh/core.h"
#include "site_backend.h"

namespace lm {

struct StepLayer {
  lm_tensor input_norm, post_norm;
  lm_tensor qkv;       // [q + 2·kv, H]
  lm_tensor qkv_bias;  // [q + 2·kv] f32; data null when the model has none
  lm_tensor o;         // [H, q]
  bool moe = false;
  lm_tensor gate_up, down;  // dense: [2I, H], [H, I]
  lm_tensor router;         // MoE: [E, H]
  std::vector<lm_tensor> expert_gate_up, expert_down;
  int32_t sliding_window = 0;  // 0 = unlimited
  lm_tensor k_cache, v_cache;  // [blocks, block_size, kv_heads, head_dim]
};

// Built once from the JS Model and KV cache: pointers into tensors the caller keeps alive.
struct StepModel {
  int64_t hidden = 0, heads = 0, kv_heads = 0, head_dim = 0, intermediate = 0, vocab = 0;
  int32_t experts = 0, top_k = 0, rotary_dim = 0;
  float eps = 0, attention_scaling = 1;
  std::vector<float> inv_freq;  // rotary_dim/2 (non-dynamic rope; a step may override it)
  lm_tensor embed, final_norm, lm_head;
  std::vector<StepLayer> layers;
};

// The per-step arrays. Pointers stay valid for the whole call.
struct StepBatch {
  int64_t tokens = 0, seqs = 0, max_blocks = 0;
  const int32_t* ids = nullptr;           // [tokens]
  const int32_t* positions = nullptr;     // [tokens]
  const int32_t* token_seq = nullptr;     // [tokens]
  const int32_t* slots = nullptr;         // [tokens] KV slot of each token
  const int32_t* block_tables = nullptr;  // [seqs, max_blocks]
  const int32_t* row_adapter = nullptr;   // [tokens] index into adapter_ids, -1 none
  const char* const* adapter_ids = nullptr;
  int32_t n_adapters = 0;
  const int32_t* logit_rows = nullptr;  // rows of the batch whose logits are returned
  int64_t n_logit_rows = 0;
  float* logits = nullptr;  // [n_logit_rows, vocab]
  const float* inv_freq = nullptr;  // null: the model's
  float attention_scaling = 1;
  int64_t site_timeout_us = 0;  // passed to SiteBackend::wait
};

// Where a failed step failed: an op, the backend's begin_step (an adapter it cannot serve), or a
// site (post or wait: the LoRA side failed or did not answer).
enum class StepPhase { kNone, kOp, kBeginStep, kSite };

// Runs the step. `backend` may be null when no row uses an adapter. On failure the status is
// returned, lm_last_error() (this thread) says why and *phase where.
lm_status run_step(const StepModel& model, const StepBatch& batch, SiteBackend* backend, StepPhase* phase);

}  // namespace lm
