// Scheduling priority for the native data-plane threads (issue 13): the step thread, the op pool's
// workers and a LoRA server's ring thread. On a loaded 2-core host they wake to do microseconds of
// work and then wait tens of microseconds in the run queue behind Node event loops; a higher
// priority lets them preempt on wake-up. LORAMESH_DATAPLANE_PRIORITY chooses:
//   off        leave every thread as the process started it;
//   nice[:N]   SCHED_OTHER at nice -N (default 10): a heavier weight, hence a shorter virtual
//              deadline under EEVDF, so a woken thread preempts a running event loop;
//   fifo[:P]   SCHED_FIFO at priority P (default 1, at most 10); the default setting. Only for
//              decode-sized work (rt_rows below) and never the op pool. Every wait in these threads
//              spins for a bounded time and then sleeps on a futex, so they never hold a core
//              unboundedly; the kernel's RT throttling is only the backstop.
// Raising needs CAP_SYS_NICE (or an RLIMIT_NICE / RLIMIT_RTPRIO that allows it): without it the
// first refusal is logged once to stderr and every thread runs as it was. Never an error.
#pragma once

#include <cstdint>
#include <string>

namespace lm::priority {

enum class Mode { kOff, kNice, kFifo };

struct Setting {
  Mode mode = Mode::kOff;
  int level = 0;  // nice: N of nice -N; fifo: the SCHED_FIFO priority
};

// Parses "off" | "nice" | "nice:N" | "fifo" | "fifo:P"; false on anything else.
bool parse(const std::string& text, Setting* out);
std::string describe(const Setting& s);

// The process's setting: LORAMESH_DATAPLANE_PRIORITY read at the first call (unset or empty: the
// default, kDefault below; garbage: off, logged once).
const Setting& current();
extern const char* const kDefault;

// Under fifo only decode-sized work runs at RT priority: a step (or a ring server's batch) of at
// most this many token rows (LORAMESH_DATAPLANE_RT_ROWS, default 64). A prefill-sized step runs
// at normal priority, so a long step never holds a core at RT priority for its whole length.
int64_t rt_rows();

// Raises the calling thread, once per thread (a thread this library owns for its lifetime).
// `fifo_ok` false: only nice applies (the op pool's workers, which run whatever the step runs,
// prefill too, so they never hold SCHED_FIFO for good).
void raise_this_thread(bool fifo_ok = true);

// Raises a borrowed thread (a libuv pool thread running a step) for its lifetime and restores the
// thread's policy and nice on exit, so later libuv work runs at normal priority. `when` false
// (e.g. a step larger than rt_rows() under fifo): leaves the thread as it is.
class Scope {
 public:
  explicit Scope(bool when = true);
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool raised_ = false;
  bool was_fifo_ = false;
  int policy_ = 0;
  int priority_ = 0;
  int nice_ = 0;
};

// Takes a thread raised to SCHED_FIFO back to SCHED_OTHER while it exists, when `when` holds (a
// ring server's batch larger than rt_rows()); restored afterwards. No-op otherwise.
class Lowered {
 public:
  explicit Lowered(bool when);
  ~Lowered();
  Lowered(const Lowered&) = delete;
  Lowered& operator=(const Lowered&) = delete;

 private:
  bool lowered_ = false;
  bool was_fifo_ = false;
  int priority_ = 0;
};

// Whether the calling thread runs SCHED_FIFO by this module's doing (raise_this_thread, or inside
// a Scope that raised it or found it raised, and not inside a Lowered): no syscall. A spinning
// real-time thread uses it to decide whether it must yield its core (shm_ring.h, spin_for).
bool this_thread_fifo();

// Counters since process start: threads raised, raises refused (no privilege), the last refusal.
struct Stats {
  uint64_t raised = 0;
  uint64_t refused = 0;
  std::string error;
};
Stats stats();

// Testing hook: makes every raise fail as if refused (EPERM), to exercise the fallback.
void force_refusal_for_testing(bool on);

}  // namespace lm::priority
