#include "priority.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <atomic>
#include <cstring>
#include <mutex>

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace lm::priority {

// fifo by default (issue 13, branch m13g): it cuts the ring's queue and wake from ~65 + ~50 µs to
// ~8 + ~1 µs a site on the loaded 2-vCPU VM. Bounded to decode-sized work: a step or a ring batch
// of more than rt_rows() token rows, and the op pool's workers always, run at normal priority, so
// a long prefill never holds a core at RT priority (docs/performance.md).
const char* const kDefault = "fifo";

namespace {

constexpr int kDefaultNice = 10;
constexpr int kDefaultFifo = 1;
constexpr int kMaxFifo = 10;  // stay far below kernel threads and watchdogs

std::mutex mu;
Stats counters;
std::atomic<bool> forced_refusal{false};
bool logged = false;

void note(bool ok, const std::string& error) {
  std::lock_guard<std::mutex> g(mu);
  if (ok) {
    counters.raised++;
    return;
  }
  counters.refused++;
  counters.error = error;
  if (!logged) {
    logged = true;
    std::fprintf(stderr,
                 "loramesh: LORAMESH_DATAPLANE_PRIORITY=%s refused (%s); data-plane threads run at normal priority "
                 "(grant CAP_SYS_NICE, or set it to off)\n",
                 describe(current()).c_str(), error.c_str());
  }
}

bool parse_level(const std::string& digits, int lo, int hi, int* out) {
  if (digits.empty() || digits.size() > 3) return false;
  int v = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  if (v < lo || v > hi) return false;
  *out = v;
  return true;
}

#if defined(__linux__)
pid_t this_tid() { return static_cast<pid_t>(syscall(SYS_gettid)); }

// Applies the setting to the calling thread; false with *error on refusal.
bool apply(const Setting& s, std::string* error) {
  if (forced_refusal.load()) {
    *error = std::string("forced for testing: ") + std::strerror(EPERM);
    return false;
  }
  if (s.mode == Mode::kNice) {
    // setpriority with a thread id sets that one thread's nice (Linux: nice is per thread).
    if (setpriority(PRIO_PROCESS, static_cast<id_t>(this_tid()), -s.level) == 0) return true;
    *error = std::string("setpriority: ") + std::strerror(errno);
    return false;
  }
  sched_param p{};
  p.sched_priority = s.level;
  const int rc = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p);
  if (rc == 0) return true;
  *error = std::string("pthread_setschedparam(SCHED_FIFO): ") + std::strerror(rc);
  return false;
}
#endif

}  // namespace

bool parse(const std::string& text, Setting* out) {
  Setting s;
  const size_t colon = text.find(':');
  const std::string mode = text.substr(0, colon);
  const std::string level = colon == std::string::npos ? "" : text.substr(colon + 1);
  if (mode == "off" && colon == std::string::npos) {
    s.mode = Mode::kOff;
  } else if (mode == "nice") {
    s.mode = Mode::kNice;
    s.level = kDefaultNice;
    if (colon != std::string::npos && !parse_level(level, 1, 20, &s.level)) return false;
  } else if (mode == "fifo") {
    s.mode = Mode::kFifo;
    s.level = kDefaultFifo;
    if (colon != std::string::npos && !parse_level(level, 1, kMaxFifo, &s.level)) return false;
  } else {
    return false;
  }
  *out = s;
  return true;
}

std::string describe(const Setting& s) {
  switch (s.mode) {
    case Mode::kNice:
      return "nice:" + std::to_string(s.level);
    case Mode::kFifo:
      return "fifo:" + std::to_string(s.level);
    default:
      return "off";
  }
}

const Setting& current() {
  static const Setting setting = [] {
    Setting s;
    const char* v = std::getenv("LORAMESH_DATAPLANE_PRIORITY");
    const std::string text = v && *v ? v : kDefault;
    if (!parse(text, &s)) {
      std::fprintf(stderr, "loramesh: LORAMESH_DATAPLANE_PRIORITY=%s is not off, nice[:1-20] or fifo[:1-%d]; using off\n",
                   text.c_str(), kMaxFifo);
      s = Setting{};
    }
    return s;
  }();
  return setting;
}

int64_t rt_rows() {
  static const int64_t rows = [] {
    const char* v = std::getenv("LORAMESH_DATAPLANE_RT_ROWS");
    if (!v || !*v) return int64_t{64};
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    return end && *end == '\0' && n >= 0 ? static_cast<int64_t>(n) : int64_t{64};
  }();
  return rows;
}

namespace {
// Whether the calling thread runs SCHED_FIFO through this module (raise_this_thread, Scope, Lowered).
thread_local bool tl_fifo = false;
}  // namespace

bool this_thread_fifo() { return tl_fifo; }

void raise_this_thread(bool fifo_ok) {
  thread_local bool done = false;
  if (done) return;
  done = true;
  const Setting& s = current();
  if (s.mode == Mode::kOff || (s.mode == Mode::kFifo && !fifo_ok)) return;
#if defined(__linux__)
  std::string error;
  const bool ok = apply(s, &error);
  note(ok, error);
  tl_fifo = ok && s.mode == Mode::kFifo;
#endif
}

Scope::Scope(bool when) {
  const Setting& s = current();
  if (s.mode == Mode::kOff || !when) return;
#if defined(__linux__)
  sched_param p{};
  if (pthread_getschedparam(pthread_self(), &policy_, &p) != 0) return;
  priority_ = p.sched_priority;
  errno = 0;
  nice_ = getpriority(PRIO_PROCESS, static_cast<id_t>(this_tid()));
  if (errno != 0) return;
  was_fifo_ = tl_fifo;
  // Already raised (a nested step, or a thread raised for good): leave it as it is.
  if ((s.mode == Mode::kFifo && policy_ == SCHED_FIFO) || (s.mode == Mode::kNice && nice_ <= -s.level)) {
    tl_fifo = policy_ == SCHED_FIFO;
    return;
  }
  std::string error;
  raised_ = apply(s, &error);
  note(raised_, error);
  tl_fifo = raised_ && s.mode == Mode::kFifo;
#endif
}

Scope::~Scope() {
#if defined(__linux__)
  tl_fifo = was_fifo_;
  if (!raised_) return;
  // Lowering a thread's own priority back needs no privilege.
  sched_param p{};
  p.sched_priority = priority_;
  pthread_setschedparam(pthread_self(), policy_, &p);
  setpriority(PRIO_PROCESS, static_cast<id_t>(this_tid()), nice_);
#endif
}

Lowered::Lowered(bool when) {
#if defined(__linux__)
  if (!when) return;
  int policy = 0;
  sched_param p{};
  if (pthread_getschedparam(pthread_self(), &policy, &p) != 0 || policy != SCHED_FIFO) return;
  priority_ = p.sched_priority;
  sched_param other{};
  lowered_ = pthread_setschedparam(pthread_self(), SCHED_OTHER, &other) == 0;
  was_fifo_ = tl_fifo;
  if (lowered_) tl_fifo = false;
#else
  (void)when;
#endif
}

Lowered::~Lowered() {
#if defined(__linux__)
  if (!lowered_) return;
  // Back to where it was raised (the privilege that raised it allows it again).
  sched_param p{};
  p.sched_priority = priority_;
  pthread_setschedparam(pthread_self(), SCHED_FIFO, &p);
  tl_fifo = was_fifo_;
#endif
}

Stats stats() {
  std::lock_guard<std::mutex> g(mu);
  return counters;
}

void force_refusal_for_testing(bool on) { forced_refusal.store(on); }

}  // namespace lm::priority
