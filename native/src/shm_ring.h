// Shared-memory rings between a base worker and a LoRA server on the same host (issue 13).
//
// The LoRA server creates one segment per attached worker under /dev/shm, named
// `loramesh-<server pid>-<random hex>`, and tells the worker the name through the gRPC attach
// call; the worker maps it and unlinks the name at once, so after both sides mapped nothing is left
// in /dev/shm to leak. The server never opens a path a caller sends.
//
// A segment holds a header and kSlots request/response slots. The worker writes a request into a
// free slot, bumps the slot's req_seq and rings the segment's server bell (a futex word); the
// server's thread waits on the bells of all its segments at once (futex_waitv), batches, writes the
// delta, sets resp_seq and wakes that word. Everything read from the other side is validated: a
// header field is copied once and checked before any offset is derived from it.
#pragma once

#include <sched.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "loramesh/core.h"
#include "site_backend.h"
#include "site_compute.h"

namespace lm::shm {

constexpr uint32_t kMagic = 0x4c4d5233;  // "LMR3" (3: worker_stepping counts steps; the slot's post_ns)
constexpr uint32_t kSlots = 4;
constexpr uint32_t kMaxAdapters = 256;
constexpr uint32_t kIdsBytes = 16 * 1024;
constexpr uint32_t kMessageBytes = 256;
constexpr size_t kDefaultSegmentBytes = 32u << 20;

// Segment states (Header::state).
enum : uint32_t { kCreated = 0, kAttached = 1, kWorkerClosed = 2, kDetached = 3 };

struct alignas(64) Slot {
  std::atomic<uint32_t> req_seq;   // worker → server: a request with this number is written
  std::atomic<uint32_t> resp_seq;  // server → worker: its response is written (futex word)
  std::atomic<uint32_t> ack_seq;   // worker: the response was read (a worker that stops reading is detached)
  int32_t layer, site, rows, h_in, n_out, n_adapters, moe;
  uint32_t ids_bytes;
  int32_t status;                  // lm_status of the response
  // Server clock (CLOCK_MONOTONIC, shared by both processes) of the response: when the post was
  // first seen, when its batch's kernel started and when the response was written. Only timing:
  // the worker never derives an offset or a decision from them.
  int64_t seen_ns, run_ns, done_ns;
  // Worker clock of the post (written before req_seq): the server learns from it how long after
  // its answer this worker posts the next site (the expected post, shm_server.cpp). Only timing.
  int64_t post_ns;
  // 1 while the worker sleeps (futex) on resp_seq: the server wakes it only then (a spinning
  // worker sees the store without a syscall).
  std::atomic<uint32_t> worker_sleeping;
  // The server's thread took the request with this number (it runs now): the worker keeps
  // spinning for the response only then; a post not taken soon means the server sleeps or has
  // no core, and the worker then sleeps too, so as not to hold a core the server needs.
  std::atomic<uint32_t> taken_seq;
  char message[kMessageBytes];     // error message of the response
};

struct alignas(64) Header {
  uint32_t magic;
  uint32_t n_slots;
  uint64_t segment_bytes;
  uint64_t slot_bytes;  // data bytes per slot
  uint64_t data_offset;
  int32_t server_pid;
  std::atomic<int32_t> worker_pid;
  std::atomic<uint32_t> state;
  alignas(64) std::atomic<uint32_t> server_bell;  // futex word the server thread waits on
  std::atomic<uint32_t> server_sleeping;           // 1 while the server thread sleeps on the bells
  // Odd while the worker runs a step (begin_step → end_step; +1 at each, so every step has its own
  // value): its next post follows within microseconds, so the server's thread spins briefly for it
  // after each answer instead of sleeping between sites (the expected post, shm_server.cpp; a
  // futex wake-up of the other vCPU costs ~16 µs on the Zen 4 VM). Raised unless
  // LM_RING_STEP_SPIN_US=0.
  std::atomic<uint32_t> worker_stepping;
  Slot slots[kSlots];
};

// Data of one slot: [ids | row_adapter i32[rows] | row_expert i32[rows] | x f32[rows*h_in] | delta f32[rows*n_out]].
struct SlotLayout {
  size_t ids, row_adapter, row_expert, x, delta, end;
};
SlotLayout slot_layout(int64_t rows, int64_t h_in, int64_t n_out);

// Futex helpers on a shared (not process-private) 32-bit word.
void futex_wake(std::atomic<uint32_t>* word);
// Waits while *word == expected, at most timeout_ns (< 0: no limit). Returns false on timeout.
bool futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns);
// Waits on several words at once (futex_waitv); returns false on timeout.
bool futex_wait_any(std::atomic<uint32_t>* const* words, const uint32_t* expected, int n, int64_t timeout_ns);

int64_t now_ns();
bool pid_alive(int32_t pid);

// Bounded busy-wait with the pause instruction (a hyperthread sibling or the other side keeps the
// core): returns true as soon as done() holds, false after spin_ns. It also gives up when it finds
// it was descheduled (two clock reads 16 pauses apart more than kPreemptedNs apart): the cores are
// oversubscribed, so spinning only burns the slice the peer needs and makes this thread the one
// the scheduler favours least; then *preempted is set and the caller should sleep instead.
//
// `yield_ns` > 0 (a real-time spinner, branch m13l): sched_yield() that often while spinning. Two
// SCHED_FIFO peers of the same priority that end up on one core (another real-time thread holds
// the other core, or the hypervisor took that vCPU) never preempt each other: without a yield the
// spinner keeps the core for its whole bound while the peer it waits for sits runnable behind it
// (measured: every ring round trip ~200 µs, the server's 150 µs gap spin plus the worker's 30 µs
// take spin, docs/performance.md). A yield hands the core to a peer queued on it at once and
// returns at once otherwise (~0.45 µs on the Zen 4 VM); it never hands it to a fair-class thread.
// Time given away by a yield is not taken for preemption.
constexpr int64_t kPreemptedNs = 30'000;
template <typename Done>
bool spin_for(int64_t spin_ns, Done&& done, bool* preempted = nullptr, int64_t yield_ns = 0) {
  int64_t last = now_ns();
  const int64_t until = last + spin_ns;
  int64_t next_yield = yield_ns > 0 ? last + yield_ns : INT64_MAX;
  for (int i = 0;; i++) {
    if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
    if ((i & 15) == 15) {
      int64_t now = now_ns();
      if (now - last > kPreemptedNs) {
        if (preempted) *preempted = true;
        return done();
      }
      if (now >= until) return done();
      if (now >= next_yield) {
        sched_yield();
        now = now_ns();
        next_yield = now + yield_ns;
      }
      last = now;
    }
  }
}

// A spin bound in µs from the environment (LM_RING_SPIN_US and friends: for measuring other
// settings without a rebuild), else the default; read once per process.
int64_t env_us(const char* name, int64_t fallback);

// Asks the scheduler for a short time slice (LM_RING_SLICE_US µs, e.g. 100; 0, the default: leave
// it; the loaded A/B in docs/performance.md was mixed) for the calling thread, once per thread: on Linux ≥ 6.12 (EEVDF) a waking thread with a shorter slice
// than the running one preempts it at once instead of queueing behind it, so a ring thread woken
// by its peer does not wait for a busy event loop's slice to end. Its share of the CPU is unchanged
// (slice is latency, not weight), and no privilege is needed. Older kernels take the value as
// meaningless for the fair class (ignored); a refusal leaves the thread as it was. True when set.
bool ring_thread_slice();

// Where a ring site's time went, as the worker saw it (ns, CLOCK_MONOTONIC).
struct SiteTiming {
  int64_t post_ns = 0;  // the worker rang the bell
  int64_t seen_ns = 0;  // the server's thread saw the post
  int64_t run_ns = 0;   // its batch's kernel started
  int64_t done_ns = 0;  // the response was written
  int64_t woke_ns = 0;  // the worker saw it
};
// The last ring site this thread waited for (benchmarks and the probe read it).
const SiteTiming& last_site_timing();

// Process-wide sums over every ring site a worker waited for successfully: the step reads them
// before and after it runs and reports the difference (per-step aggregates, no per-site JS call).
struct RingTotals {
  uint64_t sites = 0;
  int64_t wait_ns = 0;     // post → the worker saw the response
  int64_t queue_ns = 0;    // post → the server saw it (doorbell and server wake-up)
  int64_t batch_ns = 0;    // seen → kernel start (batching window, validation)
  int64_t compute_ns = 0;  // kernel start → response written
  int64_t wake_ns = 0;     // response written → the worker saw it
  uint64_t worker_sleeps = 0;  // waits that ended in a futex sleep (the spin was not enough)
};
RingTotals ring_totals();
// The same sums over the sites this thread waited for (the step reads them around its run).
RingTotals thread_ring_totals();

// Whether `name` is a segment name this module generates (loramesh-<pid>-<hex>), and its pid.
bool parse_name(const std::string& name, int32_t* pid);

// A mapped segment. The layout is kept here, in private memory, so a peer that scribbles over the
// shared header cannot move either side's view outside the mapping.
struct Mapping {
  void* base = nullptr;
  size_t bytes = 0;
  size_t data_offset = 0;
  size_t slot_bytes = 0;
  Header* header() const { return static_cast<Header*>(base); }
  uint8_t* slot_data(uint32_t i) const {
    return static_cast<uint8_t*>(base) + data_offset + static_cast<size_t>(i) * slot_bytes;
  }
};

// Server: creates, sizes and maps a fresh segment; writes its name.
lm_status create_segment(size_t bytes, std::string* name, Mapping* out);
// Worker: maps the segment a server named (validated name, no symlinks), then unlinks the name.
lm_status open_segment(const std::string& name, Mapping* out);
void unmap(Mapping* m);
void unlink_name(const std::string& name);
// Unlinks every loramesh ring segment whose creator is dead; returns how many.
int reap_dead_segments();


// ---- the LoRA server's side (shm_server.cpp) ----

// The packed tables and the site checks are shared with the UCX server (site_compute.h).
using lm::SiteWeights;
using lm::Tables;
using lm::site_key;

struct ServerOptions {
  int32_t n_layers = 0;
  int32_t n_experts = 0;  // 0: dense model
  int32_t h_in[4] = {0, 0, 0, 0};
  int32_t n_out[4] = {0, 0, 0, 0};
  size_t segment_bytes = kDefaultSegmentBytes;
  int64_t window_us = 2000;          // longest a posted site waits for other workers' posts
  int64_t active_us = 100000;        // a worker that posted this recently is waited for
  int64_t site_timeout_us = 10000000;  // a response unread this long detaches the worker
  int64_t attach_timeout_us = 10000000;  // a segment never mapped this long is removed
};

// What the ring thread was doing when a worker's post arrived (the expected post's diagnosis: a
// post that finds the thread asleep pays a futex wake-up in its queue phase).
enum PostFound : int {
  kFoundBusy = 0,         // not waiting: scanning or running a kernel
  kFoundExpectSpin = 1,   // spinning for this post (the expected post)
  kFoundTimedNap = 2,     // asleep until its self-wake shortly before the expected post
  kFoundContended = 3,    // asleep: an expected post was due, but a descheduled spin locked spins out
  kFoundNoExpectation = 4,  // asleep inside a step with no expected window (gap unknown, too long or passed)
  kFoundIdle = 5,         // asleep, no worker inside a step
  kFoundLate = 6,         // asleep after spinning for an expected post that had not come by the window's end
  kFoundKinds = 7,
};

struct ServerStats {
  uint64_t native_calls = 0, work_items = 0, rows = 0, attached = 0, detached = 0;
  uint64_t posts_found[kFoundKinds] = {};  // new posts, by what the ring thread was doing
  uint64_t preempted_spins = 0;  // spins that found themselves descheduled (each locks spins out for 100 ms)
  std::vector<std::string> detached_workers;  // since the last stats() call, with the reason
  std::map<std::string, uint64_t> adapter_rows;  // rows computed per adapter id, since the server started
};

class Server {
 public:
  static std::shared_ptr<Server> start(const ServerOptions& options);
  virtual ~Server() = default;
  // Creates a segment for a worker; returns its name (under /dev/shm) and size.
  virtual lm_status attach(const std::string& worker_id, std::string* name, uint64_t* bytes) = 0;
  virtual void set_tables(std::shared_ptr<const Tables> tables) = 0;
  virtual ServerStats stats() = 0;
  // Detaches every worker (their waits return LM_ERR_UNAVAILABLE), removes the segments, joins the thread.
  virtual void stop() = 0;
};

// ---- the worker's side (shm_client.cpp) ----

// Maps the segment `name` a LoRA server created for this worker. The backend posts sites into its
// slots and waits on the response doorbell; a dead, detached or silent server makes wait() return
// LM_ERR_UNAVAILABLE, an adapter the server does not hold LM_ERR_NOT_FOUND.
lm_status connect(const std::string& name, std::shared_ptr<SiteBackend>* out);
// Tells the server this worker is leaving (further posts fail); the mapping goes with the last reference.
void close_backend(SiteBackend* backend);
// Whether the ring is usable; closes and unmaps it when its server died or detached this worker.
bool backend_check(SiteBackend* backend);
// Whether a site of this size fits one slot of the backend's segment.
bool backend_fits(SiteBackend* backend, int64_t rows, int64_t h_in, int64_t n_out);

}  // namespace lm::shm
