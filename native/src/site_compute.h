// What a LoRA server computes a remote site with, whatever carried it (shared-memory ring or UCX):
// the packed adapter tables, the request checks against the model, adapter-id resolution, and one
// batched kernel call over the rows of several workers' requests for the same (layer, site).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "loramesh/core.h"

namespace lm {

// One site's packed adapter weights (as lm_lora_weights describes them), owned by the server.
struct SiteWeights {
  lm_dtype dtype = LM_F32;
  std::vector<uint8_t> a_pool, b_pool;
  int32_t n_keys = 0, n_slices = 0, max_rank = 0;
  int32_t widths[LM_LORA_MAX_SLICES] = {0, 0, 0, 0};
  std::vector<int32_t> rank;
  std::vector<float> scale;
  std::vector<int64_t> a_offset, b_offset;
  bool b_transposed = false;  // B pool k-major (lm_lora_weights.b_transposed); see transpose_b
};

// Rewrites w's B pool k-major once, after its tables are filled, where that pays (f32 pools: a
// faster expand at decode, same bytes). A pool whose tables do not fit it is left as it is; the
// kernel call reports it.
void transpose_b(SiteWeights* w);

// The adapter pool's slots and packed sites. Replaced whole (never mutated) when the pool
// changes, so a server thread reads it without holding a lock.
struct Tables {
  std::unordered_map<std::string, int32_t> slot_of;
  std::vector<std::string> slot_names;  // pool slot → adapter id ("" for a free slot)
  std::map<int32_t, SiteWeights> sites;  // key: site_key(layer, site, moe)
};
inline int32_t site_key(int32_t layer, int32_t site, int32_t moe) { return (layer * 4 + site) * 2 + moe; }

// The model's site shapes a request is checked against.
struct ModelDims {
  int32_t n_layers = 0;
  int32_t n_experts = 0;  // 0: dense model
  int32_t h_in[4] = {0, 0, 0, 0};
  int32_t n_out[4] = {0, 0, 0, 0};
};

// Checks a request's site, layer, MoE flag and widths against the model (a status and *why on failure).
lm_status check_site(const ModelDims& dims, int32_t layer, int32_t site, int32_t moe, int32_t h_in, int32_t n_out,
                     std::string* why);

// Resolves a request's rows to pool slots in place: `ids` holds n NUL-terminated adapter ids, each
// row an index into them (-1: no adapter). Unknown ids fail with LM_ERR_NOT_FOUND.
lm_status resolve_rows(const Tables& tables, const std::string& ids, int32_t n_adapters, std::vector<int32_t>* rows,
                       std::string* why);

// Checks MoE experts of the rows.
lm_status check_experts(const ModelDims& dims, const std::vector<int32_t>& experts, std::string* why);

// One worker's request in a batch: its activations and its resolved rows.
struct BatchPart {
  const float* x;  // [rows, h_in]
  const std::vector<int32_t>* row_slot;
  const std::vector<int32_t>* row_expert;  // empty on dense sites
};

// Runs the batched kernel once over every part's rows (all of one (layer, site, moe)); writes the
// deltas of all parts, in order, into *y [sum(rows), n_out]. No table: no resident adapter touches
// the site, so the deltas are zero.
lm_status apply_batch(const Tables& tables, int32_t n_experts, int32_t layer, int32_t site, int32_t moe, int32_t h_in,
                      int32_t n_out, const std::vector<BatchPart>& parts, std::vector<float>* y);

}  // namespace lm
