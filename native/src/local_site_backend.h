// Coupled mode's SiteBackend: the batched heterogeneous-rank LoRA kernels in this process, over
// the adapters resident on this worker, packed per (layer, site) at true rank (the layout
// lm_lora_weights describes). The backend owns copies of the packed pools, and rewrites its f32 B
// pools k-major (faster expand at decode, same bytes); the JavaScript side builds a new one when
// the resident set changes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "site_backend.h"

namespace lm {

// One (layer, site)'s packed weights: keys are adapter slots (dense) or slot·experts + expert (MoE).
struct PackedSite {
  bool present = false;  // false: no resident adapter touches this site
  bool moe = false;
  lm_dtype dtype = LM_F32;
  std::vector<uint8_t> a_pool, b_pool;
  int32_t n_keys = 0, n_slices = 0, max_rank = 0;
  int32_t slice_width[LM_LORA_MAX_SLICES] = {0, 0, 0, 0};
  std::vector<int32_t> rank;
  std::vector<float> scale;
  std::vector<int64_t> a_offset, b_offset;
  bool b_transposed = false;  // set by the backend: B pool rewritten k-major (lm_lora_weights.b_transposed)
};

class LocalSiteBackend : public SiteBackend {
 public:
  // `slots`: resident adapter ids, in slot order. `sites`: layers·4 entries, index layer·4 + SiteId.
  LocalSiteBackend(std::vector<std::string> slots, int32_t n_experts, std::vector<PackedSite> sites);

  // Checks every site's tables against its pools (lm_lora_* rules); call once after building.
  lm_status validate() const;

  lm_status begin_step(const char* const* adapter_ids, int32_t n) override;
  lm_status post(const SiteCall& call, uint64_t* ticket) override;
  lm_status wait(uint64_t ticket, int64_t timeout_us) override;
  void end_step() override;
  bool plan_fused(const SiteCall& call, float* y, cpu::LoraJob* job, lm_status* status) override;
  int64_t site_bytes(const SiteCall& call) const override;

 private:
  lm_status run(const SiteCall& call);
  // row_slot_ from the call's row adapters; false (error set) when one is out of range.
  lm_status map_rows(const SiteCall& call);

  std::vector<std::string> slots_;
  int32_t n_experts_;
  std::vector<PackedSite> sites_;
  std::vector<int32_t> step_slot_;  // the step's adapter index -> slot
  std::vector<SiteCall> posted_;
  std::vector<int32_t> row_slot_;
};

}  // namespace lm
