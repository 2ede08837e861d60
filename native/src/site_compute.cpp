// The transport-independent part of a LoRA server's remote sites (site_compute.h).
#include "site_compute.h"

#include <cstring>

#include "common.h"
#include "ops.h"

namespace lm {

lm_status check_site(const ModelDims& dims, int32_t layer, int32_t site, int32_t moe, int32_t h_in, int32_t n_out,
                     std::string* why) {
  auto bad = [why](lm_status s, std::string m) {
    *why = std::move(m);
    return s;
  };
  if (site < 0 || site > 3) return bad(LM_ERR_ARGUMENT, "unknown site " + std::to_string(site));
  if (layer < 0 || layer >= dims.n_layers) return bad(LM_ERR_ARGUMENT, "layer " + std::to_string(layer) + " does not exist");
  if (moe != 0 && (moe != 1 || dims.n_experts == 0))
    return bad(LM_ERR_ARGUMENT, "row_expert must have one entry per row on an MoE model");
  if (h_in != dims.h_in[site] || n_out != dims.n_out[site])
    return bad(LM_ERR_SHAPE,
               "site shape [" + std::to_string(h_in) + " -> " + std::to_string(n_out) + "] does not match the model");
  return LM_OK;
}

lm_status resolve_rows(const Tables& tables, const std::string& ids, int32_t n_adapters, std::vector<int32_t>* rows,
                       std::string* why) {
  std::vector<std::string> names;
  size_t pos = 0;
  for (int32_t a = 0; a < n_adapters; a++) {
    const size_t end = ids.find('\0', pos);
    if (end == std::string::npos) {
      *why = "malformed adapter ids";
      return LM_ERR_ARGUMENT;
    }
    names.push_back(ids.substr(pos, end - pos));
    pos = end + 1;
  }
  std::vector<int32_t> slot_of(static_cast<size_t>(n_adapters), -2);  // -2: not resolved yet
  for (int32_t& r : *rows) {
    if (r < -1 || r >= n_adapters) {
      *why = "row_adapter index is outside adapter_ids";
      return LM_ERR_ARGUMENT;
    }
    if (r < 0) continue;
    int32_t& resolved = slot_of[static_cast<size_t>(r)];
    if (resolved == -2) {
      auto found = tables.slot_of.find(names[static_cast<size_t>(r)]);
      if (found == tables.slot_of.end()) {
        *why = "adapter " + names[static_cast<size_t>(r)] + " is not resident on this LoRA server";
        return LM_ERR_NOT_FOUND;
      }
      resolved = found->second;
    }
    r = resolved;
  }
  return LM_OK;
}

lm_status check_experts(const ModelDims& dims, const std::vector<int32_t>& experts, std::string* why) {
  for (int32_t e : experts)
    if (e < 0 || e >= dims.n_experts) {
      *why = "row_expert is outside the experts";
      return LM_ERR_ARGUMENT;
    }
  return LM_OK;
}

void transpose_b(SiteWeights* w) {
  const size_t entries = static_cast<size_t>(w->n_keys) * static_cast<size_t>(w->n_slices);
  if (!cpu::prefer_transposed_b(w->dtype) || w->n_slices < 1 || w->n_slices > LM_LORA_MAX_SLICES || w->rank.size() != entries || w->b_offset.size() != entries) return;
  const auto elems = static_cast<int64_t>(w->b_pool.size() / elem_size(w->dtype));
  w->b_transposed = cpu::transpose_lora_b(w->b_pool.data(), w->dtype, elems, w->n_keys, w->n_slices, w->widths,
                                          w->rank.data(), w->b_offset.data());
}

lm_status apply_batch(const Tables& tables, int32_t n_experts, int32_t layer, int32_t site, int32_t moe, int32_t h_in,
                      int32_t n_out, const std::vector<BatchPart>& parts, std::vector<float>* y) {
  int64_t rows = 0;
  for (const BatchPart& p : parts) rows += static_cast<int64_t>(p.row_slot->size());
  y->assign(static_cast<size_t>(rows * n_out), 0.0f);
  auto found = tables.sites.find(site_key(layer, site, moe));
  if (found == tables.sites.end() || rows == 0) return LM_OK;
  std::vector<float> x(static_cast<size_t>(rows * h_in));
  std::vector<int32_t> row_slot, row_expert;
  row_slot.reserve(static_cast<size_t>(rows));
  int64_t r = 0;
  for (const BatchPart& p : parts) {
    const int64_t n = static_cast<int64_t>(p.row_slot->size());
    std::memcpy(x.data() + r * h_in, p.x, static_cast<size_t>(n * h_in) * 4);
    row_slot.insert(row_slot.end(), p.row_slot->begin(), p.row_slot->end());
    row_expert.insert(row_expert.end(), p.row_expert->begin(), p.row_expert->end());
    r += n;
  }
  const SiteWeights& w = found->second;
  const int64_t entries = static_cast<int64_t>(w.rank.size());
  lm_tensor a{const_cast<uint8_t*>(w.a_pool.data()), w.dtype, LM_CPU, 0, 1, {static_cast<int64_t>(w.a_pool.size() / elem_size(w.dtype))}};
  lm_tensor b{const_cast<uint8_t*>(w.b_pool.data()), w.dtype, LM_CPU, 0, 1, {static_cast<int64_t>(w.b_pool.size() / elem_size(w.dtype))}};
  lm_tensor rk{const_cast<int32_t*>(w.rank.data()), LM_I32, LM_CPU, 0, 1, {entries}};
  lm_tensor sc{const_cast<float*>(w.scale.data()), LM_F32, LM_CPU, 0, 1, {entries}};
  lm_tensor ao{const_cast<int64_t*>(w.a_offset.data()), LM_I64, LM_CPU, 0, 1, {entries}};
  lm_tensor bo{const_cast<int64_t*>(w.b_offset.data()), LM_I64, LM_CPU, 0, 1, {entries}};
  lm_lora_weights lw{&a, &b, w.n_keys, w.n_slices, {w.widths[0], w.widths[1], w.widths[2], w.widths[3]}, &rk, &sc, &ao, &bo, w.max_rank, w.b_transposed ? 1 : 0};
  lm_tensor xt{x.data(), LM_F32, LM_CPU, 0, 2, {rows, h_in}};
  lm_tensor yt{y->data(), LM_F32, LM_CPU, 0, 2, {rows, n_out}};
  lm_tensor st{row_slot.data(), LM_I32, LM_CPU, 0, 1, {rows}};
  if (moe) {
    lm_tensor et{row_expert.data(), LM_I32, LM_CPU, 0, 1, {rows}};
    return lm_lora_apply_moe(&lw, n_experts, &xt, nullptr, &st, &et, nullptr, &yt);
  }
  return lm_lora_apply(&lw, &xt, &st, &yt);
}

}  // namespace lm
