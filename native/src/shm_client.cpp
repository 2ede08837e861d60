// The worker's end of a shared-memory ring: ShmSiteBackend implements lm::SiteBackend over the
// segment its LoRA server created. post() writes a site into a free slot and rings the server's
// bell; wait() spins (bounded, with pause) on the slot's response word, then sleeps on it, checking
// between naps that the server is alive and has not detached this worker. Each side raises a
// "sleeping" flag before its futex wait, so the other side makes the wake syscall only when needed.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "common.h"
#include "priority.h"
#include "shm_ring.h"
#include "site_probe.h"

namespace lm::shm {

namespace {

// Once the server took the post, its reply follows within microseconds (a decode site's kernel).
// The spin bound is longer than a futex wake-up (50–110 µs measured on this VM), so a pair of
// spinning peers does not fall into a ping-pong where each spin ends just before the other side
// wakes; it is bounded so that, on a loaded machine, a waiter gives its core back.
const int64_t kSpinNs = env_us("LM_RING_SPIN_US", 200) * 1000;
// How long a post may stay untaken by the server's thread before the worker stops spinning: the
// server then sleeps or has no core, and a spinning worker would only hold a core it needs.
const int64_t kTakeNs = env_us("LM_RING_TAKE_US", 30) * 1000;
// LM_RING_LEAVE_CORE=0 lets the step use the whole pool even with a ring (for measuring both ways).
const bool kLeaveCore = env_us("LM_RING_LEAVE_CORE", 1) != 0;
// LM_RING_STEP_SPIN_US (the server's expected-post bound, shm_server.cpp; 0 = off) also decides
// whether the worker raises worker_stepping and pre-wakes the server at begin_step.
const bool kStepping = env_us("LM_RING_STEP_SPIN_US", 40) != 0;
// announce() (branch m13k): the worker raises worker_stepping and rings the server when its step is
// queued, not when the step's thread begins it, so the server's wake-up overlaps the hand-over to
// the libuv thread (who calls it and when: step_binding.cpp, announce_mode). LM_RING_ANNOUNCE=0:
// at begin_step only, as before.
const bool kAnnounce = env_us("LM_RING_ANNOUNCE", 1) != 0;
constexpr int64_t kNapNs = 20'000'000;  // between liveness checks of the server
// A real-time waiter yields its core this often while it spins (shm_ring.h, spin_for): the ring's
// thread, at the same priority, may be queued on this core (LM_RING_YIELD_US; 0 = never).
const int64_t kYieldNs = env_us("LM_RING_YIELD_US", 5) * 1000;

thread_local SiteTiming last_timing;
thread_local RingTotals thread_totals;
struct Totals {
  std::atomic<uint64_t> sites{0}, sleeps{0};
  std::atomic<int64_t> wait_ns{0}, queue_ns{0}, batch_ns{0}, compute_ns{0}, wake_ns{0};
};
Totals& totals() {
  static Totals t;
  return t;
}

// Records a site's timing; the server's stamps are clamped into [post, woke] (a peer's garbage
// cannot produce negative or huge sums).
void record(SiteTiming t, bool slept) {
  auto clamp = [&](int64_t v, int64_t lo) { return std::min(std::max(v, lo), t.woke_ns); };
  t.seen_ns = clamp(t.seen_ns, t.post_ns);
  t.run_ns = clamp(t.run_ns, t.seen_ns);
  t.done_ns = clamp(t.done_ns, t.run_ns);
  last_timing = t;
  RingTotals& m = thread_totals;
  m.sites++;
  m.worker_sleeps += slept ? 1 : 0;
  m.wait_ns += t.woke_ns - t.post_ns;
  m.queue_ns += t.seen_ns - t.post_ns;
  m.batch_ns += t.run_ns - t.seen_ns;
  m.compute_ns += t.done_ns - t.run_ns;
  m.wake_ns += t.woke_ns - t.done_ns;
  Totals& s = totals();
  s.sites.fetch_add(1, std::memory_order_relaxed);
  if (slept) s.sleeps.fetch_add(1, std::memory_order_relaxed);
  s.wait_ns.fetch_add(t.woke_ns - t.post_ns, std::memory_order_relaxed);
  s.queue_ns.fetch_add(t.seen_ns - t.post_ns, std::memory_order_relaxed);
  s.batch_ns.fetch_add(t.run_ns - t.seen_ns, std::memory_order_relaxed);
  s.compute_ns.fetch_add(t.done_ns - t.run_ns, std::memory_order_relaxed);
  s.wake_ns.fetch_add(t.woke_ns - t.done_ns, std::memory_order_relaxed);
}

class ShmSiteBackend final : public SiteBackend {
 public:
  explicit ShmSiteBackend(const Mapping& m) : map_(m), server_pid_(m.header()->server_pid) {}

  ~ShmSiteBackend() override {
    std::lock_guard<std::mutex> g(mu_);
    close_locked();
    if (map_.base) unmap(&map_);
  }

  // Tells the server this worker leaves and unmaps the segment as soon as no site is in flight
  // (a wait in progress unmaps it when it returns), so a closed ring holds no memory.
  void close() {
    std::lock_guard<std::mutex> g(mu_);
    close_locked();
    release_locked();
  }

  // Whether the ring is still usable; a dead or detaching server closes (and unmaps) it here, so a
  // worker lets go of a dead server's segment even when no site is waiting on it.
  bool check() {
    std::lock_guard<std::mutex> g(mu_);
    if (!closed_ && map_.base) {
      const bool detached = map_.header()->state.load(std::memory_order_acquire) == kDetached;
      const bool dead = !pid_alive(server_pid_);
      if (!detached && !dead) return true;
      broken_ = detached ? "the LoRA server detached this worker"
                         : "the LoRA server (pid " + std::to_string(server_pid_) + ") is gone";
      close_locked();
      if (dead) reap_dead_segments();
    }
    release_locked();
    return false;
  }

  bool fits(int64_t rows, int64_t h_in, int64_t n_out) const {
    return rows >= 0 && h_in > 0 && n_out > 0 && rows * (h_in + n_out) < (int64_t{1} << 40) &&
           slot_layout(rows, h_in, n_out).end <= map_.slot_bytes;
  }

  lm_status begin_step(const char* const* adapter_ids, int32_t n) override {
    if (n < 0 || n > static_cast<int32_t>(kMaxAdapters))
      return fail(LM_ERR_ARGUMENT, "a step names more than " + std::to_string(kMaxAdapters) + " adapters");
    std::string blob;
    for (int32_t i = 0; i < n; i++) {
      blob += adapter_ids[i];
      blob.push_back('\0');
    }
    if (blob.size() > kIdsBytes) return fail(LM_ERR_ARGUMENT, "adapter ids of a step exceed the ring's id area");
    std::lock_guard<std::mutex> g(mu_);
    // Per thread: the native step and the JavaScript path (shmSite) may use one ring at once.
    const bool fresh = ids_.emplace(std::this_thread::get_id(), std::pair<std::string, int32_t>{}).second;
    ids_[std::this_thread::get_id()] = {std::move(blob), n};
    if (fresh && steppers_++ == 0 && kStepping && map_.base && !closed_ && !stepping_raised_) {
      // Odd: inside a step (a new value per step, so the server tells a new step from the last
      // one even when it slept through the end). Wake the server's thread now: it wakes while the
      // step runs its first ops and spins for the first post (shm_server.cpp, the expected post).
      map_.header()->worker_stepping.fetch_add(1, std::memory_order_seq_cst);
      stepping_raised_ = true;
      ring();
    }
    return LM_OK;
  }

  // The server's ring thread runs on this host's cores (each site's kernel, spins between posts).
  bool peer_shares_cores() const override { return kLeaveCore; }

  // A step is queued: worker_stepping goes odd now (begin_step then leaves it; end_step makes it
  // even), and the bell wakes the server while the step is handed to its thread. A step that never
  // comes leaves the word odd until this ring's next step ends: the server's spins for it are
  // bounded (shm_server.cpp), so that costs at most one bounded spin.
  void announce() override {
    if (!kAnnounce || !kStepping) return;
    std::lock_guard<std::mutex> g(mu_);
    if (stepping_raised_ || !map_.base || closed_) return;
    map_.header()->worker_stepping.fetch_add(1, std::memory_order_seq_cst);
    stepping_raised_ = true;
    ring();
  }

  lm_status post(const SiteCall& call, uint64_t* ticket) override {
    if (call.site < kSiteQkv || call.site > kSiteDown || call.layer < 0 || call.rows < 0)
      return fail(LM_ERR_ARGUMENT, "bad site call");
    if (!fits(call.rows, call.in_features, call.out_features))
      return fail(LM_ERR_SHAPE, std::to_string(call.rows) + " rows do not fit a ring slot of " +
                                    std::to_string(map_.slot_bytes) + " bytes");
    const int64_t probe_start = site_probe::on() ? site_probe::now() : 0;
    std::lock_guard<std::mutex> g(mu_);
    if (lm_status s = usable(); s != LM_OK) return s;
    const auto ids = ids_.find(std::this_thread::get_id());
    if (ids == ids_.end()) return fail(LM_ERR_ARGUMENT, "a ring site was posted before begin_step");
    const std::string& blob = ids->second.first;
    uint32_t s = 0;
    while (s < kSlots && busy_[s]) s++;
    if (s == kSlots) return fail(LM_ERR_ARGUMENT, "every ring slot has a site in flight");
    Slot& slot = map_.header()->slots[s];
    uint8_t* data = map_.slot_data(s);
    const SlotLayout l = slot_layout(call.rows, call.in_features, call.out_features);
    std::memcpy(data + l.ids, blob.data(), blob.size());
    std::memcpy(data + l.row_adapter, call.row_adapter, static_cast<size_t>(call.rows) * 4);
    if (call.row_expert) std::memcpy(data + l.row_expert, call.row_expert, static_cast<size_t>(call.rows) * 4);
    std::memcpy(data + l.x, call.x, static_cast<size_t>(call.rows * call.in_features) * 4);
    slot.layer = call.layer;
    slot.site = call.site;
    slot.rows = static_cast<int32_t>(call.rows);
    slot.h_in = static_cast<int32_t>(call.in_features);
    slot.n_out = static_cast<int32_t>(call.out_features);
    slot.n_adapters = ids->second.second;
    slot.moe = call.row_expert ? 1 : 0;
    slot.ids_bytes = static_cast<uint32_t>(blob.size());
    uint32_t seq = ++seq_[s];
    if ((seq & 0x80000000u) != 0 || seq == 0) seq = seq_[s] = 1;  // the top bit marks a detach
    busy_[s] = true;
    delta_[s] = call.delta;
    count_[s] = call.rows * call.out_features;
    post_ns_[s] = now_ns();
    slot.post_ns = post_ns_[s];
    slot.req_seq.store(seq, std::memory_order_release);
    ring();
    *ticket = (static_cast<uint64_t>(s) << 32) | seq;
    if (probe_start != 0) site_probe::add(site_probe::kWorkerPost, site_probe::now() - probe_start);
    return LM_OK;
  }

  lm_status wait(uint64_t ticket, int64_t timeout_us) override {
    const uint32_t s = static_cast<uint32_t>(ticket >> 32), seq = static_cast<uint32_t>(ticket);
    {
      std::lock_guard<std::mutex> g(mu_);
      if (s >= kSlots || !busy_[s] || seq_[s] != seq) return fail(LM_ERR_ARGUMENT, "unknown ticket");
    }
    ring_thread_slice();  // once per waiting thread (the step's): woken, it runs at once
    Header* h = map_.header();
    Slot& slot = h->slots[s];
    const int64_t start = now_ns(), deadline = start + (timeout_us < 0 ? INT64_MAX / 2 : timeout_us * 1000);
    uint32_t seen = slot.resp_seq.load(std::memory_order_acquire);
    const int64_t yield_ns = priority::this_thread_fifo() ? kYieldNs : 0;
    const bool taken = spin_for(
        kTakeNs,
        [&] {
          return (seen = slot.resp_seq.load(std::memory_order_acquire)) == seq ||
                 slot.taken_seq.load(std::memory_order_acquire) == seq;
        },
        nullptr, yield_ns);
    if (taken && seen != seq)
      spin_for(
          kSpinNs, [&] { return (seen = slot.resp_seq.load(std::memory_order_acquire)) == seq; }, nullptr, yield_ns);
    const bool slept = seen != seq;
    while (seen != seq) {
      if (h->state.load(std::memory_order_acquire) == kDetached)
        return broken(s, "the LoRA server detached this worker");
      if (!pid_alive(server_pid_)) {
        reap_dead_segments();
        return broken(s, "the LoRA server (pid " + std::to_string(server_pid_) + ") is gone");
      }
      const int64_t now = now_ns();
      if (now >= deadline)
        return broken(s, "the LoRA server did not answer a site within " + std::to_string(timeout_us / 1000) + " ms");
      // Raise the flag, then look again: a response stored before the server read the flag is
      // seen here; one stored after it finds the flag and wakes us (both sides use seq_cst).
      slot.worker_sleeping.store(1, std::memory_order_seq_cst);
      seen = slot.resp_seq.load(std::memory_order_seq_cst);
      if (seen != seq) futex_wait(&slot.resp_seq, seen, std::min(kNapNs, deadline - now));
      slot.worker_sleeping.store(0, std::memory_order_relaxed);
      seen = slot.resp_seq.load(std::memory_order_acquire);
    }
    SiteTiming timing;
    timing.woke_ns = now_ns();
    timing.post_ns = post_ns_[s];
    timing.seen_ns = slot.seen_ns;
    timing.run_ns = slot.run_ns;
    timing.done_ns = slot.done_ns;
    const lm_status status = static_cast<lm_status>(slot.status);
    std::string message;
    if (status == LM_OK) {
      const SlotLayout l = slot_layout(slot.rows, slot.h_in, slot.n_out);
      std::memcpy(delta_[s], map_.slot_data(s) + l.delta, static_cast<size_t>(count_[s]) * 4);
      if (site_probe::on()) site_probe::add(site_probe::kWorkerCopy, site_probe::now() - timing.woke_ns);
    } else {
      char buf[kMessageBytes];
      std::memcpy(buf, slot.message, kMessageBytes);
      buf[kMessageBytes - 1] = '\0';
      message = buf;
    }
    slot.ack_seq.store(seq, std::memory_order_release);
    {
      std::lock_guard<std::mutex> g(mu_);
      busy_[s] = false;
      release_locked();
    }
    if (status == LM_OK) {
      record(timing, slept);
      return LM_OK;
    }
    const bool known = status == LM_ERR_NOT_FOUND || status == LM_ERR_ARGUMENT || status == LM_ERR_SHAPE ||
                       status == LM_ERR_SLOT || status == LM_ERR_DTYPE;
    return fail(known ? status : LM_ERR_UNAVAILABLE, "LoRA server: " + message);
  }

  void end_step() override {
    std::lock_guard<std::mutex> g(mu_);
    if (ids_.erase(std::this_thread::get_id()) > 0 && --steppers_ == 0 && stepping_raised_) {
      stepping_raised_ = false;
      if (map_.base) map_.header()->worker_stepping.fetch_add(1, std::memory_order_release);  // even: out of a step
    }
  }

 private:
  // Caller holds mu_ and the segment is still mapped.
  void close_locked() {
    if (closed_ || !map_.base) return;
    closed_ = true;
    Header* h = map_.header();
    uint32_t attached = kAttached;
    h->state.compare_exchange_strong(attached, kWorkerClosed);
    ring();
  }

  void release_locked() {
    if (!closed_ || !map_.base) return;
    for (bool b : busy_)
      if (b) return;
    unmap(&map_);
  }

  // The wake syscall only when the server thread sleeps (or is about to: see the flag protocol in wait()).
  void ring() {
    Header* h = map_.header();
    h->server_bell.fetch_add(1, std::memory_order_seq_cst);
    if (h->server_sleeping.load(std::memory_order_seq_cst) != 0) futex_wake(&h->server_bell);
  }

  // Caller holds mu_.
  lm_status usable() {
    if (closed_ || !map_.base) return fail(LM_ERR_UNAVAILABLE, broken_.empty() ? "the shared-memory ring is closed" : broken_);
    if (map_.header()->state.load(std::memory_order_acquire) == kDetached)
      return fail(LM_ERR_UNAVAILABLE, "the LoRA server detached this worker");
    return LM_OK;
  }

  // The ring is unusable from now on (the slot's state is unknown): later posts fail fast.
  lm_status broken(uint32_t s, const std::string& why) {
    std::lock_guard<std::mutex> g(mu_);
    busy_[s] = false;
    if (broken_.empty()) broken_ = why;
    close_locked();
    release_locked();
    return fail(LM_ERR_UNAVAILABLE, why);
  }

  Mapping map_;
  const int32_t server_pid_;
  std::mutex mu_;
  bool closed_ = false;
  std::string broken_;
  std::unordered_map<std::thread::id, std::pair<std::string, int32_t>> ids_;  // begin_step's ids, per thread
  int steppers_ = 0;  // threads between begin_step and end_step (worker_stepping is odd while > 0)
  bool stepping_raised_ = false;  // this worker made worker_stepping odd (end_step makes it even again)
  bool busy_[kSlots] = {false, false, false, false};
  uint32_t seq_[kSlots] = {0, 0, 0, 0};
  float* delta_[kSlots] = {nullptr, nullptr, nullptr, nullptr};
  int64_t count_[kSlots] = {0, 0, 0, 0};
  int64_t post_ns_[kSlots] = {0, 0, 0, 0};
};

}  // namespace

const SiteTiming& last_site_timing() { return last_timing; }

RingTotals thread_ring_totals() { return thread_totals; }

RingTotals ring_totals() {
  const Totals& t = totals();
  RingTotals r;
  r.sites = t.sites.load(std::memory_order_relaxed);
  r.worker_sleeps = t.sleeps.load(std::memory_order_relaxed);
  r.wait_ns = t.wait_ns.load(std::memory_order_relaxed);
  r.queue_ns = t.queue_ns.load(std::memory_order_relaxed);
  r.batch_ns = t.batch_ns.load(std::memory_order_relaxed);
  r.compute_ns = t.compute_ns.load(std::memory_order_relaxed);
  r.wake_ns = t.wake_ns.load(std::memory_order_relaxed);
  return r;
}

lm_status connect(const std::string& name, std::shared_ptr<SiteBackend>* out) {
  reap_dead_segments();
  Mapping m;
  if (lm_status s = open_segment(name, &m); s != LM_OK) return s;
  Header* h = m.header();
  h->worker_pid.store(getpid(), std::memory_order_release);
  uint32_t created = kCreated;
  if (!h->state.compare_exchange_strong(created, kAttached)) {
    unmap(&m);
    return fail(LM_ERR_UNAVAILABLE, "the LoRA server's segment " + name + " is no longer open for attach");
  }
  h->server_bell.fetch_add(1, std::memory_order_release);
  futex_wake(&h->server_bell);
  *out = std::make_shared<ShmSiteBackend>(m);
  return LM_OK;
}

void close_backend(SiteBackend* backend) {
  if (auto* b = dynamic_cast<ShmSiteBackend*>(backend)) b->close();
}

bool backend_check(SiteBackend* backend) {
  auto* b = dynamic_cast<ShmSiteBackend*>(backend);
  return b != nullptr && b->check();
}

bool backend_fits(SiteBackend* backend, int64_t rows, int64_t h_in, int64_t n_out) {
  auto* b = dynamic_cast<ShmSiteBackend*>(backend);
  return b != nullptr && b->fits(rows, h_in, n_out);
}

}  // namespace lm::shm
