// LM_SITE_PROBE=DIR (measurement only, off by default): per-process totals of where a LoRA site's
// time goes on each side, written to DIR/site-probe-<pid>.json every 2048 records of a phase (a process that is
// killed keeps its last write). Used to account the shm ring's cost per site against the coupled
// site's in-process LoRA (docs/performance.md, issue 13, branch m13j). Off: one branch per record.
#pragma once

#include <cstdint>

namespace lm::site_probe {

enum Phase : int {
  kLocalRun,      // coupled: LocalSiteBackend::run (zero the delta, resolve rows, the kernel)
  kServerApply,   // LoRA server: apply_batch (gather the batch, the kernel)
  kServerRespond, // LoRA server: respond() for the batch (copy each worker its deltas, ring back)
  kServerAfter,   // LoRA server: run()'s bookkeeping after the answers (per-adapter rows, stats lock)
  kWorkerPost,    // worker: post() (copy the rows into the slot, ring the bell)
  kWorkerCopy,    // worker: after the reply was seen, copying the deltas out of the slot
  kPhases
};

bool on();
int64_t now();
void add(Phase phase, int64_t ns);

}  // namespace lm::site_probe
