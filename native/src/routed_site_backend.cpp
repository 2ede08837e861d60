#include "routed_site_backend.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common.h"
#include "shm_ring.h"

namespace lm {

RoutedStats& routed_stats() {
  static RoutedStats stats;
  return stats;
}

RoutedSiteBackend::RoutedSiteBackend(std::vector<SiteRoute> routes, std::shared_ptr<SiteBackend> fallback)
    : routes_(std::move(routes)), fallback_(std::move(fallback)) {}

SiteBackend* RoutedSiteBackend::backend_of(int target) const {
  return target == kFallback ? fallback_.get() : routes_[static_cast<size_t>(target)].backend.get();
}

int64_t RoutedSiteBackend::timeout_of(int target, int64_t step_timeout_us) const {
  const int64_t own = target == kFallback ? 0 : routes_[static_cast<size_t>(target)].timeout_us;
  if (own <= 0) return step_timeout_us;
  return step_timeout_us <= 0 ? own : std::min(own, step_timeout_us);
}

RoutedSiteBackend::StepState* RoutedSiteBackend::state() {
  const std::thread::id me = std::this_thread::get_id();
  std::lock_guard<std::mutex> g(mu_);
  for (auto& [id, st] : states_)
    if (id == me) return st.get();
  return nullptr;
}

lm_status RoutedSiteBackend::begin_step(const char* const* adapter_ids, int32_t n) {
  StepState* st = state();
  if (st == nullptr) {
    const std::thread::id me = std::this_thread::get_id();
    std::lock_guard<std::mutex> g(mu_);
    auto spare = std::find_if(spare_.begin(), spare_.end(), [&](const auto& e) { return e.first == me; });
    std::unique_ptr<StepState> fresh;
    if (spare != spare_.end()) {
      fresh = std::move(spare->second);
      spare_.erase(spare);
    } else {
      fresh = std::make_unique<StepState>();
    }
    st = fresh.get();
    states_.emplace_back(me, std::move(fresh));
  }
  st->posted.clear();
  st->begun.clear();
  // A failed begin_step ends what it began (the step calls no end_step after it): a ring is not
  // left marked inside a step, and this thread's state is retired.
  const auto unbegin = [this](lm_status s) {
    const std::string message = lm_last_error();
    end_step();
    return fail(s, message);
  };
  st->target_of.assign(static_cast<size_t>(n), kFallback);
  for (int32_t a = 0; a < n; a++) {
    for (size_t r = 0; r < routes_.size() && st->target_of[a] == kFallback; r++) {
      const auto& ids = routes_[r].adapters;
      if (std::find(ids.begin(), ids.end(), adapter_ids[a]) != ids.end()) st->target_of[a] = static_cast<int>(r);
    }
    if (st->target_of[a] == kFallback && !fallback_) {
      (void)fail(LM_ERR_SLOT, std::string("no LoRA site backend serves adapter ") + adapter_ids[a]);
      return unbegin(LM_ERR_SLOT);
    }
  }
  // Every backend sees the step's whole id list (rows index it); each only resolves the ids its rows use.
  st->begun.assign(routes_.size() + 1, false);
  for (size_t r = 0; r < routes_.size(); r++) {
    if (std::find(st->target_of.begin(), st->target_of.end(), static_cast<int>(r)) == st->target_of.end()) continue;
    if (lm_status s = routes_[r].backend->begin_step(adapter_ids, n); s != LM_OK) return unbegin(s);
    st->begun[r] = true;
  }
  // The fallback also takes ring sites that turn out too big or not in the ring's table.
  if (fallback_) {
    if (lm_status s = fallback_->begin_step(adapter_ids, n); s != LM_OK) return unbegin(s);
    st->begun.back() = true;
  }
  return LM_OK;
}

lm_status RoutedSiteBackend::post_part(const SiteCall& call, Part* part) {
  SiteCall c = call;
  if (!part->direct) {
    part->delta.assign(static_cast<size_t>(call.rows * call.out_features), 0.0f);
    c.row_adapter = part->row_adapter.data();
    c.delta = part->delta.data();
  }
  return backend_of(part->target)->post(c, &part->ticket);
}

lm_status RoutedSiteBackend::post(const SiteCall& call, uint64_t* ticket) {
  StepState* st = state();
  if (st == nullptr) return fail(LM_ERR_ARGUMENT, "routed LoRA backend: a site was posted before begin_step");
  // Which backend serves each row; ring sites too big for a slot go to the fallback.
  std::vector<int> row_target(static_cast<size_t>(call.rows), kFallback);
  std::vector<int> targets;
  for (int64_t r = 0; r < call.rows; r++) {
    const int32_t a = call.row_adapter[r];
    if (a < 0) continue;
    if (static_cast<size_t>(a) >= st->target_of.size()) return fail(LM_ERR_SLOT, "routed LoRA backend: a row names no adapter");
    int t = st->target_of[static_cast<size_t>(a)];
    if (t != kFallback && routes_[static_cast<size_t>(t)].ring &&
        !shm::backend_fits(routes_[static_cast<size_t>(t)].backend.get(), call.rows, call.in_features,
                           call.out_features)) {
      routed_stats().too_big++;
      t = kFallback;
    }
    row_target[static_cast<size_t>(r)] = t;
    if (std::find(targets.begin(), targets.end(), t) == targets.end()) targets.push_back(t);
  }
  Posted p;
  p.call = call;
  for (int t : targets) {
    Part part;
    part.target = t;
    part.direct = targets.size() == 1;  // the common case: no split, no copies
    if (!part.direct) {
      part.row_adapter.assign(static_cast<size_t>(call.rows), -1);
      for (int64_t r = 0; r < call.rows; r++)
        if (row_target[static_cast<size_t>(r)] == t) part.row_adapter[static_cast<size_t>(r)] = call.row_adapter[r];
    }
    p.parts.push_back(std::move(part));
  }
  if (p.parts.empty()) std::memset(call.delta, 0, sizeof(float) * static_cast<size_t>(call.rows * call.out_features));
  for (size_t i = 0; i < p.parts.size(); i++) {
    if (lm_status s = post_part(call, &p.parts[i]); s != LM_OK) {
      // Parts already posted still get their wait, so their slots are free again.
      const std::string message = lm_last_error();
      for (size_t j = 0; j < i; j++) (void)backend_of(p.parts[j].target)->wait(p.parts[j].ticket, timeout_of(p.parts[j].target, 10'000'000));
      return fail(s, message);
    }
  }
  *ticket = st->posted.size();
  st->posted.push_back(std::move(p));
  return LM_OK;
}

lm_status RoutedSiteBackend::wait_part(const Posted& p, Part* part, int64_t timeout_us) {
  lm_status s = backend_of(part->target)->wait(part->ticket, timeout_of(part->target, timeout_us));
  const SiteRoute* route = part->target == kFallback ? nullptr : &routes_[static_cast<size_t>(part->target)];
  const bool ring = route && route->ring, ucx = route && route->ucx;
  if (s == LM_ERR_NOT_FOUND && (ring || ucx) && fallback_) {
    // The ring's table leaves the adapter out (still loading layer by layer): the stream waits for the layer.
    routed_stats().not_found++;
    part->target = kFallback;
    if (s = post_part(p.call, part); s != LM_OK) return s;
    s = backend_of(kFallback)->wait(part->ticket, timeout_us);
    if (s == LM_OK) routed_stats().fallback_sites++;
    return s;
  }
  if (s != LM_OK) return s;
  if (ring || ucx) {
    (ring ? routed_stats().ring_sites : routed_stats().ucx_sites)++;
    const int32_t* ra = part->direct ? p.call.row_adapter : part->row_adapter.data();
    uint64_t rows = 0;
    for (int64_t r = 0; r < p.call.rows; r++) rows += ra[r] >= 0 ? 1 : 0;
    (ring ? routed_stats().ring_rows : routed_stats().ucx_rows) += rows;
  } else {
    routed_stats().fallback_sites++;
  }
  return LM_OK;
}

lm_status RoutedSiteBackend::wait(uint64_t ticket, int64_t timeout_us) {
  StepState* st = state();
  if (st == nullptr || ticket >= st->posted.size()) return fail(LM_ERR_ARGUMENT, "routed LoRA backend: unknown ticket");
  Posted& p = st->posted[ticket];
  lm_status first = LM_OK;
  std::string message;
  // Every part is waited for, even after one failed, so no slot stays in flight.
  for (Part& part : p.parts) {
    const lm_status s = wait_part(p, &part, timeout_us);
    if (s != LM_OK && first == LM_OK) {
      first = s;
      message = lm_last_error();
    }
  }
  if (first != LM_OK) return fail(first, message);
  if (p.parts.size() > 1) {
    // Disjoint rows: each row's delta comes from the part that served it (others wrote zeros).
    const int64_t out = p.call.out_features;
    std::memset(p.call.delta, 0, sizeof(float) * static_cast<size_t>(p.call.rows * out));
    for (const Part& part : p.parts)
      for (int64_t r = 0; r < p.call.rows; r++)
        if (part.row_adapter[static_cast<size_t>(r)] >= 0)
          std::memcpy(p.call.delta + r * out, part.delta.data() + r * out, sizeof(float) * static_cast<size_t>(out));
  }
  return LM_OK;
}

bool RoutedSiteBackend::peer_shares_cores() const {
  const StepState* st = const_cast<RoutedSiteBackend*>(this)->state();
  if (st == nullptr) return false;
  for (size_t r = 0; r < routes_.size(); r++)
    if (st->begun.size() > r && st->begun[r] && routes_[r].backend->peer_shares_cores()) return true;
  return false;
}

void RoutedSiteBackend::announce() {
  for (const SiteRoute& r : routes_) r.backend->announce();
}

void RoutedSiteBackend::end_step() {
  StepState* st = state();
  if (st == nullptr) return;
  for (size_t r = 0; r < routes_.size(); r++)
    if (st->begun.size() > r && st->begun[r]) routes_[r].backend->end_step();
  if (fallback_ && !st->begun.empty() && st->begun.back()) fallback_->end_step();
  st->begun.clear();
  st->posted.clear();
  st->target_of.clear();
  // The state leaves this thread's step: its next step on this backend reuses the buffers.
  const std::thread::id me = std::this_thread::get_id();
  std::lock_guard<std::mutex> g(mu_);
  auto it = std::find_if(states_.begin(), states_.end(), [&](const auto& e) { return e.first == me; });
  if (it == states_.end()) return;
  if (spare_.size() < 4) spare_.emplace_back(me, std::move(it->second));
  states_.erase(it);
}

}  // namespace lm
