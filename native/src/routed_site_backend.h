// A SiteBackend that sends each adapter's rows to the backend serving it (issue 13): adapters on a
// same-host LoRA server with an attached ring go to that ring's ShmSiteBackend, and adapters on a
// remote-host LoRA server with a UCX connection to its UcxSiteBackend (issue 19), straight from the
// step's thread (no JavaScript, no libuv hop per site); the rest go to a fallback (the callback
// backend: the gRPC stream, hybrid). The JavaScript remote backend builds it, because it knows
// placement, replicas and which rings are attached, and keeps it across steps while those do not
// change (rebuilding it every step cost the worker's event loop ~40 µs a step, issue 13). A step's
// state (its adapters' targets, its posted sites) is per step thread, so steps on different threads
// may share one (as they may share a ring), and a step's state is gone at its end_step: nothing of
// an earlier step is reachable by a later one.
//
// A ring site that does not fit a slot, or whose adapter the ring's table leaves out (still loading
// layer by layer: LM_ERR_NOT_FOUND), is sent to the fallback instead, as the stream client does.
// A UCX site whose adapter the server's table leaves out goes to the fallback the same way.
// A ring or UCX connection that fails (dead, detached, unreachable or silent server) fails the site
// with LM_ERR_UNAVAILABLE and the step with it; the caller reruns the step without the ring (the existing failover path).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "site_backend.h"

namespace lm {

struct SiteRoute {
  std::vector<std::string> adapters;  // adapter ids this backend serves
  std::shared_ptr<SiteBackend> backend;
  int64_t timeout_us = 0;  // bound on one site's wait (0: the step's)
  bool ring = false;       // a shared-memory ring (size check, NOT_FOUND goes to the fallback)
  bool ucx = false;        // a UCX connection (NOT_FOUND goes to the fallback)
};

// Process-wide counts of where routed sites went (the worker exports them as metrics; tests read them).
struct RoutedStats {
  std::atomic<uint64_t> ring_sites{0};      // site parts a ring served from the step's thread
  std::atomic<uint64_t> ring_rows{0};       // rows with an adapter in those parts
  std::atomic<uint64_t> ucx_sites{0};       // site parts a UCX connection served from the step's thread
  std::atomic<uint64_t> ucx_rows{0};        // rows with an adapter in those parts
  std::atomic<uint64_t> fallback_sites{0};  // site parts the fallback served
  std::atomic<uint64_t> not_found{0};       // ring/UCX parts re-sent to the fallback (adapter not in the table)
  std::atomic<uint64_t> too_big{0};         // ring parts sent to the fallback (larger than a slot)
};
RoutedStats& routed_stats();

class RoutedSiteBackend final : public SiteBackend {
 public:
  RoutedSiteBackend(std::vector<SiteRoute> routes, std::shared_ptr<SiteBackend> fallback);

  lm_status begin_step(const char* const* adapter_ids, int32_t n) override;
  lm_status post(const SiteCall& call, uint64_t* ticket) override;
  lm_status wait(uint64_t ticket, int64_t timeout_us) override;
  void end_step() override;
  bool peer_shares_cores() const override;
  void announce() override;

 private:
  static constexpr int kFallback = -1;
  // One backend's share of a posted site.
  struct Part {
    int target = kFallback;  // route index or kFallback
    uint64_t ticket = 0;
    bool direct = false;                // every adapter row of the site: written straight into call.delta
    std::vector<int32_t> row_adapter;   // the site's rows, -1 where another backend serves them
    std::vector<float> delta;           // [rows, out] unless direct
  };
  struct Posted {
    SiteCall call{};
    std::vector<Part> parts;
  };
  // One step's state, owned by the thread running it (begin_step … end_step).
  struct StepState {
    std::vector<int> target_of;  // per step adapter index
    std::vector<bool> begun;     // per route, then the fallback last
    std::vector<Posted> posted;
  };

  SiteBackend* backend_of(int target) const;
  int64_t timeout_of(int target, int64_t step_timeout_us) const;
  lm_status post_part(const SiteCall& call, Part* part);
  lm_status wait_part(const Posted& p, Part* part, int64_t timeout_us);
  // This thread's step (created by begin_step; null outside one).
  StepState* state();

  std::vector<SiteRoute> routes_;
  std::shared_ptr<SiteBackend> fallback_;
  mutable std::mutex mu_;
  // Per step thread; a retired state is kept for the thread's next step (no allocation per step).
  std::vector<std::pair<std::thread::id, std::unique_ptr<StepState>>> states_;
  std::vector<std::pair<std::thread::id, std::unique_ptr<StepState>>> spare_;
};

}  // namespace lm
