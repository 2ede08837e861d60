// Scheduling priority for the native data-plane threads (issue 13): the step thread, the op pool's
// workers and a LoRA server's ring thread. On a loaded 2-core host they wake to do microseconds of
// work and then wait tens of microseconds in the run queue behind Node event loops; a higher
// priority lets them preempt on wake-up. LORAMESH_DATAPLANE_PRIORITY chooses:
//   off        leave every thread as the process started it;
//   nice[:N]   SCHED_OTHER at nice -N (default 10): a heavier weight, hence a shorter virtual
//              deadline under EEVDF, so a woken thread preempts a running event loop;
//   fifo[:P]   SCHED_FIFO at priority P (default 1, at most 10). Every wait in these threads spins
//              for a bounded time and then sleeps on a futex, so they never hold a core
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

// Raises the calling thread, once per thread (a thread this library owns for its lifetime).
void raise_this_thread();

// Raises a borrowed thread (a libuv pool thread running a step) for its lifetime and restores the
// thread's policy and nice on exit, so later libuv work runs at normal priority.
class Scope {
 public:
  Scope();
  ~Scope();
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool raised_ = false;
  int policy_ = 0;
  int priority_ = 0;
  int nice_ = 0;
};

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
