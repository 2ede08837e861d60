// Per-op wall time of the native step, for finding where a decode step goes. Off unless the
// environment sets LORAMESH_STEP_PROFILE=1 (otherwise one branch per op). When on, each op family
// accumulates calls, wall and process CPU nanoseconds (all threads) and weight bytes read, and the
// table is printed to stderr at process exit with each matmul family's GB/s of weights. On a shared
// machine the CPU figures are the ones to read: wall time there is mostly waiting for a core.
#pragma once

#include <chrono>
#include <cstdint>

namespace lm::profile {

enum Op : int {
  kEmbed,
  kNorm,
  kQkv,
  kRope,
  kKvWrite,
  kAttention,
  kO,
  kGateUp,
  kSiluMul,
  kDown,
  kAdd,
  kLmHead,
  kSite,
  kOther,
  kPoolWait,  // caller-side: waiting for the last worker to finish its index (the barrier)
  kStep,      // whole steps: the ops above plus what runs between them
  // Thread time (summed over the pool's threads) inside one-token matmul jobs that carry a LoRA
  // site: its shrink items, the poll for the other thread's last shrink item, the base rows, and
  // the expand of each run. Inside the matmul families' wall time; not in the shares.
  kFusedShrink,
  kFusedPoll,
  kFusedBase,
  kFusedExpand,
  kOpCount
};

// On when the environment asks for it and this thread runs a step of one token (batch-1 decode:
// prefill steps would swamp the table). run_step sets it for the step's duration.
bool enabled();
void set_step_tokens(int64_t tokens);
// Which of four tables the next records go to: bit 0 the variant when the step alternates two
// variants of an op (ops.h, LORAMESH_DECODE_CHUNKS or LORAMESH_LORA_FUSE=alt), bit 1 set for steps
// with adapters, so each variant, and base and adapter steps, get their own tables.
void set_variant(int variant);
void record(Op op, int64_t ns, int64_t cpu_ns, int64_t bytes);
// The innermost op family being timed on this thread (kStep outside every family): pool waits are
// also totalled per family, to tell which ops' joins cost the time.
Op enter(Op op);
void leave(Op previous);
int64_t process_cpu_ns();

// How a one-token matmul's pool job spent its wall time (issue 17, eighteenth pass), recorded by
// the step's thread once per job under the current op family. All in ns; `threads` is how many
// pool threads the job could use. dispatch: job start to the calling thread's first index (the
// hand-off: the pool's lock and the wake-up call); wake: job start to the first index a worker
// ran (-1: no worker ran one, the caller did them all); busy: thread time inside the indices,
// summed; rows: thread time in base rows, summed, with their weight bytes; spread: the last
// thread's end minus the first's (the imbalance of the threads' items); tail: the last thread's
// end to the job's return (the end wait's own cost).
struct JobSplit {
  int64_t wall, dispatch, wake, busy, rows_ns, rows_bytes, spread, tail;
  int threads;
};
void record_job(const JobSplit& j);

// The fused expand's calls by size (issue 17, twenty-second pass): each expand_block call of a
// one-token job, its B bytes and thread time, bucketed by bytes (under 4, 16, 64, 256 KB and
// larger). Recorded from the pool's threads, which the matmul marks with set_thread_timing while
// they run a profiled job (enabled() is the step thread's own flag).
void record_expand_call(int64_t bytes, int64_t ns);
void set_thread_timing(bool on);
bool thread_timing();

// Times its scope into `op` when profiling is on.
class Scope {
 public:
  explicit Scope(Op op, int64_t bytes = 0) : op_(op), bytes_(bytes), on_(enabled()) {
    if (on_) {
      if (op_ != kPoolWait) previous_ = enter(op_);
      start_ = std::chrono::steady_clock::now();
      cpu_start_ = process_cpu_ns();
    }
  }
  ~Scope() {
    if (!on_) return;
    record(op_, std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start_).count(),
           process_cpu_ns() - cpu_start_, bytes_);
    if (op_ != kPoolWait) leave(previous_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  Op op_;
  int64_t bytes_;
  bool on_;
  Op previous_ = kStep;
  int64_t cpu_start_ = 0;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace lm::profile
