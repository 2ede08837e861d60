// Where the native step sends a LoRA site (issue 13). The step posts a site's rows, runs the base
// projection, then waits for the deltas and adds them: so the remote LoRA work overlaps the base
// matmul. Implementations:
//   local       the batched kernels in this process (coupled mode)
//   shm         shared-memory rings + futex doorbells to a LoRA server on the same host
//   callback    hands the site to JavaScript (the existing gRPC stream, for other hosts)
// A GPU version implements the same interface with CUDA IPC buffers and device-side flags.
#pragma once

#include <cstdint>

#include "loramesh/core.h"

namespace lm {

namespace cpu {
class LoraJob;
}

// Site ids shared with TypeScript (@loramesh/formats LoraSite) and the wire.
enum SiteId : int32_t { kSiteQkv = 0, kSiteO = 1, kSiteGateUp = 2, kSiteDown = 3 };

// One LoRA site of one step, as the step thread sees it. Pointers stay valid until wait() returns.
struct SiteCall {
  int32_t layer;
  SiteId site;
  const float* x;      // [rows, in_features]
  int64_t rows, in_features, out_features;
  // The step's distinct adapters; rows name them by index (-1 = no adapter). The backend resolves
  // ids to its own slots once per step (begin_step), not per site.
  const int32_t* row_adapter;  // [rows]
  const int32_t* row_expert;   // [rows] MoE expert sites, else null
  float* delta;                // [rows, out_features] written (not accumulated) by the backend
};

class SiteBackend {
 public:
  virtual ~SiteBackend() = default;
  // Called once per step before any site, with the step's distinct adapter ids (UTF-8, n entries).
  // A backend that cannot serve one of them fails here with a status and a message (lm_last_error).
  virtual lm_status begin_step(const char* const* adapter_ids, int32_t n) = 0;
  // Starts a site. Must not wait for the remote side. `ticket` identifies it for wait().
  virtual lm_status post(const SiteCall& call, uint64_t* ticket) = 0;
  // Blocks the step thread until the delta of `ticket` is written, or `timeout_us` passes
  // (then a status the caller maps to a typed "LoRA server not answering" error).
  virtual lm_status wait(uint64_t ticket, int64_t timeout_us) = 0;
  virtual void end_step() = 0;
  // Whether the remote side computes on this host's cores while the step runs (a same-host LoRA
  // server's ring thread: it runs each site's kernel and spins between posts). The step then leaves it one core: on a 2-core
  // machine the step thread does the base work alone instead of waking the pool, whose threads
  // would otherwise hold the core the server needs. Valid after begin_step.
  virtual bool peer_shares_cores() const { return false; }
  // A backend whose kernel runs in this process on the step's own pool may plan a site as a job
  // instead of post/wait: the step then runs the job's shrink inside the base projection's pool
  // job and its expand adding straight into `y` (the projection's output, [rows, out_features]).
  // false: not offered for this site (use post/wait). On true with *status != LM_OK the site failed.
  virtual bool plan_fused(const SiteCall& call, float* y, cpu::LoraJob* job, lm_status* status) {
    (void)call, (void)y, (void)job, (void)status;
    return false;
  }
  // Adapter weight bytes a site reads (the step profile's GB/s); 0 when the backend does not know.
  virtual int64_t site_bytes(const SiteCall& call) const {
    (void)call;
    return 0;
  }
  // A step on this backend is about to begin (called on the JS thread before the step is queued):
  // a remote side that sleeps between steps may start waking now, in parallel with the hand-over
  // to the step's thread, instead of at begin_step. Optional; must not block.
  virtual void announce() {}
};

}  // namespace lm
