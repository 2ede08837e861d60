// The local SiteBackend. post() only records the site; wait() runs the kernel on the whole pool
// after the base projection, so neither competes for the pool with the other.
#include "local_site_backend.h"

#include <cstring>
#include <utility>

#include "common.h"
#include "ops.h"
#include "site_probe.h"

namespace lm {

namespace {

lm_tensor view(const void* data, lm_dtype dtype, int64_t n) {
  lm_tensor t{};
  t.data = const_cast<void*>(data);
  t.dtype = dtype;
  t.device = LM_CPU;
  t.ndim = 1;
  t.shape[0] = n;
  return t;
}

struct SiteTensors {
  lm_tensor a, b, rank, scale, a_off, b_off;
  lm_lora_weights w{};
  explicit SiteTensors(const PackedSite& s) {
    const size_t elem = s.dtype == LM_BF16 ? 2 : 4;
    a = view(s.a_pool.data(), s.dtype, static_cast<int64_t>(s.a_pool.size() / elem));
    b = view(s.b_pool.data(), s.dtype, static_cast<int64_t>(s.b_pool.size() / elem));
    const auto entries = static_cast<int64_t>(s.rank.size());
    rank = view(s.rank.data(), LM_I32, entries);
    scale = view(s.scale.data(), LM_F32, entries);
    a_off = view(s.a_offset.data(), LM_I64, entries);
    b_off = view(s.b_offset.data(), LM_I64, entries);
    w.a_pool = &a;
    w.b_pool = &b;
    w.n_keys = s.n_keys;
    w.n_slices = s.n_slices;
    for (int i = 0; i < LM_LORA_MAX_SLICES; i++) w.slice_width[i] = s.slice_width[i];
    w.rank = &rank;
    w.scale = &scale;
    w.a_offset = &a_off;
    w.b_offset = &b_off;
    w.max_rank = s.max_rank;
    w.b_transposed = s.b_transposed ? 1 : 0;
  }
};

const char* site_name(int32_t s) {
  static const char* names[] = {"qkv", "o", "gate_up", "down"};
  return s >= 0 && s < 4 ? names[s] : "?";
}

}  // namespace

LocalSiteBackend::LocalSiteBackend(std::vector<std::string> slots, int32_t n_experts, std::vector<PackedSite> sites)
    : slots_(std::move(slots)), n_experts_(n_experts), sites_(std::move(sites)) {
  for (PackedSite& s : sites_) {
    const size_t entries = static_cast<size_t>(s.n_keys) * static_cast<size_t>(s.n_slices);
    if (!s.present || !cpu::prefer_transposed_b(s.dtype) || s.n_slices < 1 || s.n_slices > LM_LORA_MAX_SLICES || s.rank.size() != entries ||
        s.b_offset.size() != entries) {
      continue;  // validate() reports it
    }
    const int64_t elems = static_cast<int64_t>(s.b_pool.size() / (s.dtype == LM_BF16 ? 2 : 4));
    s.b_transposed = cpu::transpose_lora_b(s.b_pool.data(), s.dtype, elems, s.n_keys, s.n_slices, s.slice_width,
                                           s.rank.data(), s.b_offset.data());
  }
}

lm_status LocalSiteBackend::validate() const {
  if (sites_.size() % 4 != 0) return fail(LM_ERR_ARGUMENT, "local LoRA backend: sites must be layers × 4");
  for (size_t i = 0; i < sites_.size(); i++) {
    const PackedSite& s = sites_[i];
    if (!s.present) continue;
    const int32_t keys = static_cast<int32_t>(slots_.size()) * (s.moe ? n_experts_ : 1);
    if (s.n_keys != keys) {
      return fail(LM_ERR_ARGUMENT, "local LoRA backend: layer " + std::to_string(i / 4) + " site " +
                                       site_name(static_cast<int32_t>(i % 4)) + " has " + std::to_string(s.n_keys) +
                                       " keys, expected " + std::to_string(keys));
    }
    // Ranks and offsets are checked against the pools by every lm_lora_apply* call (it knows h_in).
    const size_t entries = static_cast<size_t>(s.n_keys) * static_cast<size_t>(s.n_slices);
    if (s.n_slices < 1 || s.n_slices > LM_LORA_MAX_SLICES || s.rank.size() != entries ||
        s.scale.size() != entries || s.a_offset.size() != entries || s.b_offset.size() != entries) {
      return fail(LM_ERR_SHAPE, "local LoRA backend: layer " + std::to_string(i / 4) + " site " +
                                    site_name(static_cast<int32_t>(i % 4)) + ": tables need n_keys × n_slices entries");
    }
  }
  return LM_OK;
}

lm_status LocalSiteBackend::begin_step(const char* const* adapter_ids, int32_t n) {
  step_slot_.assign(static_cast<size_t>(n), -1);
  posted_.clear();
  for (int32_t i = 0; i < n; i++) {
    int32_t slot = -1;
    for (size_t s = 0; s < slots_.size(); s++) {
      if (slots_[s] == adapter_ids[i]) slot = static_cast<int32_t>(s);
    }
    if (slot < 0) return fail(LM_ERR_SLOT, std::string("adapter ") + adapter_ids[i] + " is not resident on this worker");
    step_slot_[i] = slot;
  }
  return LM_OK;
}

lm_status LocalSiteBackend::post(const SiteCall& call, uint64_t* ticket) {
  const size_t index = static_cast<size_t>(call.layer) * 4 + static_cast<size_t>(call.site);
  if (call.layer < 0 || call.site < 0 || call.site > 3 || index >= sites_.size()) {
    return fail(LM_ERR_ARGUMENT, "local LoRA backend: no layer " + std::to_string(call.layer));
  }
  *ticket = posted_.size();
  posted_.push_back(call);
  return LM_OK;
}

lm_status LocalSiteBackend::wait(uint64_t ticket, int64_t) {
  if (ticket >= posted_.size()) return fail(LM_ERR_ARGUMENT, "local LoRA backend: unknown ticket");
  if (!site_probe::on()) return run(posted_[ticket]);
  const int64_t t0 = site_probe::now();
  const lm_status s = run(posted_[ticket]);
  site_probe::add(site_probe::kLocalRun, site_probe::now() - t0);
  return s;
}

void LocalSiteBackend::end_step() { posted_.clear(); }

lm_status LocalSiteBackend::map_rows(const SiteCall& c) {
  row_slot_.resize(static_cast<size_t>(c.rows));
  for (int64_t r = 0; r < c.rows; r++) {
    const int32_t a = c.row_adapter[r];
    if (a >= static_cast<int32_t>(step_slot_.size())) return fail(LM_ERR_SLOT, "local LoRA backend: row adapter out of range");
    row_slot_[r] = a < 0 ? -1 : step_slot_[a];
  }
  return LM_OK;
}

bool LocalSiteBackend::plan_fused(const SiteCall& c, float* y, cpu::LoraJob* job, lm_status* status) {
  *status = LM_OK;
  const size_t index = static_cast<size_t>(c.layer) * 4 + static_cast<size_t>(c.site);
  if (cpu::lora_fuse() != 1 || c.layer < 0 || c.site < 0 || c.site > 3 || index >= sites_.size()) return false;
  const PackedSite& s = sites_[index];
  if (s.moe) return false;  // MoE sites keep post/wait (their base runs per expert)
  *job = cpu::LoraJob();
  if (!s.present) return true;  // no resident adapter touches this site: nothing to add
  *status = map_rows(c);
  if (*status != LM_OK) return true;
  SiteTensors t(s);
  lm_tensor x{}, yt{};
  x.data = const_cast<float*>(c.x);
  x.dtype = LM_F32;
  x.ndim = 2;
  x.shape[0] = c.rows;
  x.shape[1] = c.in_features;
  yt.data = y;
  yt.dtype = LM_F32;
  yt.ndim = 2;
  yt.shape[0] = c.rows;
  yt.shape[1] = c.out_features;
  lm_tensor slot = view(row_slot_.data(), LM_I32, c.rows);
  LoraArgs a{};
  lm_device device;
  *status = lora_args(&t.w, &x, &slot, &yt, &a, &device);
  if (*status == LM_OK) job->plan(a);  // false (no row has an adapter): an empty job
  return true;
}

int64_t LocalSiteBackend::site_bytes(const SiteCall& c) const {
  const size_t index = static_cast<size_t>(c.layer) * 4 + static_cast<size_t>(c.site);
  if (c.layer < 0 || c.site < 0 || c.site > 3 || index >= sites_.size() || !sites_[index].present) return 0;
  const PackedSite& s = sites_[index];
  if (s.moe) return 0;
  // Each distinct slot's A and B, once (the kernel reads a key's weights once per 64 rows).
  std::vector<bool> seen(slots_.size(), false);
  int64_t elems = 0;
  for (int64_t r = 0; r < c.rows; r++) {
    const int32_t a = c.row_adapter[r];
    if (a < 0 || a >= static_cast<int32_t>(step_slot_.size())) continue;
    const int32_t slot = step_slot_[a];
    if (slot < 0 || seen[static_cast<size_t>(slot)]) continue;
    seen[static_cast<size_t>(slot)] = true;
    for (int32_t sl = 0; sl < s.n_slices; sl++)
      elems += int64_t{s.rank[static_cast<size_t>(slot * s.n_slices + sl)]} * (c.in_features + s.slice_width[sl]);
  }
  return elems * (s.dtype == LM_BF16 ? 2 : 4);
}

lm_status LocalSiteBackend::run(const SiteCall& c) {
  std::memset(c.delta, 0, sizeof(float) * static_cast<size_t>(c.rows * c.out_features));
  const PackedSite& s = sites_[static_cast<size_t>(c.layer) * 4 + static_cast<size_t>(c.site)];
  if (!s.present) return LM_OK;  // no resident adapter touches this site: a zero delta
  const lm_status mapped = map_rows(c);
  if (mapped != LM_OK) return mapped;
  SiteTensors t(s);
  lm_tensor x{}, slot{}, y{};
  x.data = const_cast<float*>(c.x);
  x.dtype = LM_F32;
  x.ndim = 2;
  x.shape[0] = c.rows;
  x.shape[1] = c.in_features;
  slot = view(row_slot_.data(), LM_I32, c.rows);
  y.data = c.delta;
  y.dtype = LM_F32;
  y.ndim = 2;
  y.shape[0] = c.rows;
  y.shape[1] = c.out_features;
  if (s.moe) {
    if (c.row_expert == nullptr) return fail(LM_ERR_ARGUMENT, "local LoRA backend: an MoE site needs row experts");
    lm_tensor expert = view(c.row_expert, LM_I32, c.rows);
    return lm_lora_apply_moe(&t.w, n_experts_, &x, nullptr, &slot, &expert, nullptr, &y);
  }
  return lm_lora_apply(&t.w, &x, &slot, &y);
}

}  // namespace lm
