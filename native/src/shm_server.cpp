// The LoRA server's ring thread: waits on the server bells of every attached worker's segment,
// batches the sites they posted for the same (layer, site), runs the batched LoRA kernel once on
// the adapter pool's packed weights, writes each worker its rows of the delta and rings back. No
// JavaScript runs on this path; JS only attaches workers and replaces the weight tables.
#include <sched.h>
#include <sys/prctl.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "common.h"
#include "priority.h"
#include "shm_ring.h"
#include "site_probe.h"
#include "threads.h"

namespace lm::shm {

namespace {

constexpr int64_t kHousekeepingNs = 10'000'000;  // liveness checks at most this often
// Spin before sleeping: in a tight post → wait loop the next post follows within microseconds.
// Not under fifo (0 by default): a SCHED_FIFO thread woken by the futex runs within a few µs
// (queue 5–10 µs a site measured), while its spin at RT priority holds a core the event loops
// need, 50 µs after each of a step's 12 sites (docs/performance.md, issue 13, branch m13g).
const int64_t kSpinNs =
    env_us("LM_RING_SERVER_SPIN_US", priority::current().mode == priority::Mode::kFifo ? 0 : 50) * 1000;
// The expected post (branch m13h). A worker inside a step (worker_stepping odd) posts its sites a
// few ops apart, and a ring thread that slept in between pays a futex wake-up of the other vCPU in
// the site's queue (~16 µs a site under fifo on the Zen 4 VM, 12 sites a tiny-llama step). So the
// server learns, per worker and (layer, site), how long after its answer the worker posted the
// next site (the worker's own post stamp), and in the next step waits for that post actively:
// where the gap was shorter than LM_RING_STEP_SPIN_US (µs; 40, 0 turns all of this off) it spins
// right after answering; where it was longer, up to LM_RING_EXPECT_MAX_US (500), it sleeps with a
// deadline LM_RING_WAKE_LEAD_US (30) before the expected post (a targeted self-wake: the wake-up
// overlaps the worker's ops) and then spins; either spin ends LM_RING_STEP_SPIN_US after the
// expected time, or at the post, or when the step ends. Longer gaps (a 1.1B-shaped model's base
// matmuls, the step's end) sleep as before: there the queue hides behind the worker's own work.
// A post that comes earlier than expected wakes the server as always (the doorbell is unchanged).
const int64_t kStepSpinNs = env_us("LM_RING_STEP_SPIN_US", 40) * 1000;
const int64_t kExpectMaxNs = env_us("LM_RING_EXPECT_MAX_US", 500) * 1000;
const int64_t kWakeLeadNs = env_us("LM_RING_WAKE_LEAD_US", 30) * 1000;
// Across a step's gaps (branch m13k): a real-time ring thread whose worker is inside a step keeps
// spinning up to LM_RING_GAP_SPIN_US after its last answer to that worker (or the step's start)
// instead of napping until the expected post, so a post that comes early, late or unexpected
// (~1 in 5 before: `timedNap`, `late`, `noExpectation`) finds it awake. Bounded per gap, ended by
// the step's end (the core goes back to the event loops between steps) and only under fifo (a
// spin at normal priority takes a core from runnable threads). 0 turns it off. 150 µs covers the
// longest gap of a tiny-llama step (qkv → o: rope, KV write, attention, 44–94 µs); a gap that was
// longer than the budget last time (a 1.1B-shaped model's base matmuls) is not spun across: there
// the thread sleeps as before and the queue hides behind the worker's own work. Measured in
// alternated runs (docs/performance.md, branch m13k): no post found the thread napping or late
// any more, and the shm step's forward pass came within 0.98–1.12× the coupled one's.
const int64_t kGapSpinNs = env_us("LM_RING_GAP_SPIN_US", 150) * 1000;
// A gap longer than this last time is not spun across (µs; default: the budget itself).
const int64_t kGapSpinMaxNs = env_us("LM_RING_GAP_SPIN_MAX_US", kGapSpinNs / 1000) * 1000;
// After a descheduled spin, 100 ms without stepping spins: under SCHED_OTHER the spin held a core
// another runnable thread needed. Not for a real-time ring thread (fifo): no fair-class thread can
// take its core, so a descheduled spin there is the hypervisor taking the vCPU or an interrupt, and
// locking the expected post out for 100 ms (half a bench pass) only put the futex wake-up back into
// most sites' queue (docs/performance.md, issue 13, branch m13i: 1–2 such spins a pass on the VM).
constexpr int64_t kContendedNs = 100'000'000;
// A real-time ring thread yields its core this often while it spins (branch m13l; shm_ring.h,
// spin_for): the worker it answered, at the same priority, may be queued on this core
// (LM_RING_YIELD_US, the worker's setting too; 0 = never).
const int64_t kYieldNs = env_us("LM_RING_YIELD_US", 5) * 1000;
constexpr int kMaxChannels = 120;                // futex_waitv takes 128 words
constexpr int64_t kSerialFmas = 4'000'000;       // below this a batch's kernel runs on the ring thread alone (~0.2 ms)

struct Channel {
  std::string worker_id, name;
  Mapping map;
  int64_t created_ns = 0, last_post_ns = 0;
  uint32_t answered[kSlots] = {0, 0, 0, 0};  // the server's own record; never read back from shared memory
  int64_t pending_since[kSlots] = {0, 0, 0, 0};
  uint32_t pending_seq[kSlots] = {0, 0, 0, 0};
  int64_t answered_at[kSlots] = {0, 0, 0, 0};
  uint32_t step_word = 0;   // the worker_stepping word as last read (odd: inside a step)
  int64_t stepping_ns = 0;  // when a new step was last seen beginning
  // The expected post: when the server last answered this worker, which (layer, site) that was
  // (-1: none since the worker's last post), and per (layer, site) how long the worker took after
  // that answer to post again (ns, from the worker's post stamp; 0 until measured, so a first
  // step spins briefly and learns).
  int64_t last_answer_ns = 0;
  int32_t last_key = -1;
  bool woke_worker = false;  // the last answer found the worker asleep (a futex wake-up)
  std::vector<int64_t> gap_ns;
};

// A validated request, its header fields copied out of shared memory once.
struct Item {
  Channel* ch;
  uint32_t slot, seq;
  int32_t layer, site, rows, h_in, n_out, moe;
  int64_t since;
  int64_t run_ns = 0;  // when its batch's kernel started (0: answered without one)
  std::vector<int32_t> row_slot, row_expert;
  lm_status status = LM_OK;
  std::string message;
};

class ServerImpl final : public Server {
 public:
  explicit ServerImpl(const ServerOptions& o) : opt_(o) { thread_ = std::thread([this] { loop(); }); }
  ~ServerImpl() override { stop(); }

  lm_status attach(const std::string& worker_id, std::string* name, uint64_t* bytes) override {
    auto ch = std::make_unique<Channel>();
    if (lm_status s = create_segment(opt_.segment_bytes, &ch->name, &ch->map); s != LM_OK) return s;
    ch->worker_id = worker_id;
    ch->created_ns = now_ns();
    ch->gap_ns.assign(static_cast<size_t>(std::max(opt_.n_layers, 0)) * 4, 0);
    *name = ch->name;
    *bytes = ch->map.bytes;
    {
      std::lock_guard<std::mutex> g(mu_);
      if (stopping_ || channels_.size() + incoming_.size() >= kMaxChannels) {
        unlink_name(ch->name);
        unmap(&ch->map);
        return fail(LM_ERR_UNAVAILABLE, stopping_ ? "LoRA server is stopping" : "too many attached workers");
      }
      incoming_.push_back(std::move(ch));
    }
    ring_control();
    return LM_OK;
  }

  void set_tables(std::shared_ptr<const Tables> tables) override {
    std::lock_guard<std::mutex> g(mu_);
    tables_ = std::move(tables);
  }

  ServerStats stats() override {
    std::lock_guard<std::mutex> g(mu_);
    ServerStats s = stats_;
    s.attached = attached_;
    for (int k = 0; k < kFoundKinds; k++) s.posts_found[k] = posts_found_[k].load(std::memory_order_relaxed);
    s.preempted_spins = preempted_spins_.load(std::memory_order_relaxed);
    stats_.detached_workers.clear();
    return s;
  }

  void stop() override {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (stopping_ && !thread_.joinable()) return;
      stopping_ = true;
    }
    ring_control();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void ring_control() {
    control_.fetch_add(1, std::memory_order_release);
    futex_wake(&control_);
  }

  void loop();
  void take_incoming();
  void housekeeping(int64_t now);
  void detach(size_t index, const std::string& reason);
  void collect(int64_t now, std::vector<Item>* items);
  bool validate(Item* it, const Tables* tables);
  void run(std::vector<Item*>& batch, const Tables* tables);
  void respond(Item* it, const float* delta);
  ModelDims model_dims() const {
    ModelDims d;
    d.n_layers = opt_.n_layers;
    d.n_experts = opt_.n_experts;
    for (int i = 0; i < 4; i++) d.h_in[i] = opt_.h_in[i], d.n_out[i] = opt_.n_out[i];
    return d;
  }

  const ServerOptions opt_;
  std::mutex mu_;
  bool stopping_ = false;
  std::vector<std::unique_ptr<Channel>> incoming_;
  std::shared_ptr<const Tables> tables_ = std::make_shared<Tables>();
  ServerStats stats_;
  uint64_t attached_ = 0;
  std::atomic<uint32_t> control_{0};
  std::thread thread_;
  // Thread-owned.
  std::vector<std::unique_ptr<Channel>> channels_;
  int64_t last_housekeeping_ = 0;
  int64_t contended_until_ = 0;  // until then no stepping spin (a spin was descheduled)
  int found_ = kFoundIdle;       // what this thread did since its last scan (PostFound)
  // Read by stats() from other threads; written by this one only.
  std::atomic<uint64_t> posts_found_[kFoundKinds] = {};
  std::atomic<uint64_t> preempted_spins_{0};
};

void ServerImpl::take_incoming() {
  std::lock_guard<std::mutex> g(mu_);
  for (auto& ch : incoming_) channels_.push_back(std::move(ch));
  incoming_.clear();
  attached_ = channels_.size();
}

void ServerImpl::detach(size_t index, const std::string& reason) {
  Channel* ch = channels_[index].get();
  Header* h = ch->map.header();
  h->state.store(kDetached, std::memory_order_release);
  for (auto& s : h->slots) {
    s.resp_seq.fetch_add(0x80000000u, std::memory_order_release);  // never equals a posted seq: wakes waiters
    futex_wake(&s.resp_seq);
  }
  unlink_name(ch->name);  // still there only if the worker never mapped it
  unmap(&ch->map);
  std::lock_guard<std::mutex> g(mu_);
  stats_.detached++;
  stats_.detached_workers.push_back(ch->worker_id + ": " + reason);
  channels_.erase(channels_.begin() + static_cast<std::ptrdiff_t>(index));
  attached_ = channels_.size();
}

void ServerImpl::housekeeping(int64_t now) {
  last_housekeeping_ = now;
  for (size_t i = channels_.size(); i-- > 0;) {
    Channel* ch = channels_[i].get();
    Header* h = ch->map.header();
    const uint32_t state = h->state.load(std::memory_order_acquire);
    if (state == kCreated) {
      if (now - ch->created_ns > opt_.attach_timeout_us * 1000) detach(i, "never mapped its segment");
      continue;
    }
    if (state == kWorkerClosed) {
      detach(i, "closed");
      continue;
    }
    if (state != kAttached || !pid_alive(h->worker_pid.load())) {
      detach(i, "process gone");
      continue;
    }
    for (uint32_t s = 0; s < kSlots; s++) {
      const bool unread = h->slots[s].ack_seq.load(std::memory_order_acquire) != ch->answered[s];
      if (unread && ch->answered_at[s] > 0 && now - ch->answered_at[s] > opt_.site_timeout_us * 1000) {
        detach(i, "stopped reading its deltas");
        break;
      }
    }
  }
}

void ServerImpl::collect(int64_t now, std::vector<Item>* items) {
  for (auto& up : channels_) {
    Channel* ch = up.get();
    Header* h = ch->map.header();
    if (h->state.load(std::memory_order_acquire) != kAttached) continue;
    for (uint32_t s = 0; s < kSlots; s++) {
      Slot& slot = h->slots[s];
      const uint32_t seq = slot.req_seq.load(std::memory_order_acquire);
      if (seq == ch->answered[s]) continue;
      if (ch->pending_seq[s] != seq) {
        slot.taken_seq.store(seq, std::memory_order_release);
        ch->pending_seq[s] = seq;
        ch->pending_since[s] = now;
        ch->last_post_ns = now;
        // A worker the answer had to wake posts after its own wake-up: that says nothing about
        // its gap (and on a shared core it is the time this thread's spin held the core), so it
        // is not learnt (branch m13l).
        if (ch->last_key >= 0 && static_cast<size_t>(ch->last_key) < ch->gap_ns.size() && !ch->woke_worker) {
          // The worker's stamp, clamped into [answer, now]: a peer's garbage only mistimes a spin.
          const int64_t posted = std::min(std::max(slot.post_ns, ch->last_answer_ns), now);
          ch->gap_ns[static_cast<size_t>(ch->last_key)] = posted - ch->last_answer_ns;
        }
        ch->last_key = -1;
        posts_found_[found_].fetch_add(1, std::memory_order_relaxed);
      }
      Item it;
      it.ch = ch;
      it.slot = s;
      it.seq = seq;
      it.layer = slot.layer;
      it.site = slot.site;
      it.rows = slot.rows;
      it.h_in = slot.h_in;
      it.n_out = slot.n_out;
      it.moe = slot.moe;
      it.since = ch->pending_since[s];
      items->push_back(std::move(it));
    }
  }
}

// Checks a request against the model and the slot, and resolves its adapters to pool slots.
bool ServerImpl::validate(Item* it, const Tables* tables) {
  auto bad = [it](lm_status s, std::string m) {
    it->status = s;
    it->message = std::move(m);
    return false;
  };
  std::string why;
  const ModelDims dims = model_dims();
  if (lm_status st = check_site(dims, it->layer, it->site, it->moe, it->h_in, it->n_out, &why); st != LM_OK)
    return bad(st, why);
  if (it->rows < 0 || slot_layout(it->rows, it->h_in, it->n_out).end > it->ch->map.slot_bytes)
    return bad(LM_ERR_SHAPE, std::to_string(it->rows) + " rows do not fit the ring slot");
  Slot& slot = it->ch->map.header()->slots[it->slot];
  const int32_t n_adapters = slot.n_adapters;
  const uint32_t ids_bytes = slot.ids_bytes;
  if (n_adapters < 0 || n_adapters > static_cast<int32_t>(kMaxAdapters) || ids_bytes > kIdsBytes)
    return bad(LM_ERR_ARGUMENT, "too many adapter ids");
  const uint8_t* data = it->ch->map.slot_data(it->slot);
  const SlotLayout l = slot_layout(it->rows, it->h_in, it->n_out);
  // Adapter ids: n NUL-terminated strings; copied out before they are looked up.
  std::string ids(reinterpret_cast<const char*>(data + l.ids), ids_bytes);
  it->row_slot.resize(static_cast<size_t>(it->rows));
  std::memcpy(it->row_slot.data(), data + l.row_adapter, static_cast<size_t>(it->rows) * 4);
  if (lm_status st = resolve_rows(*tables, ids, n_adapters, &it->row_slot, &why); st != LM_OK) return bad(st, why);
  if (it->moe) {
    it->row_expert.resize(static_cast<size_t>(it->rows));
    std::memcpy(it->row_expert.data(), data + l.row_expert, static_cast<size_t>(it->rows) * 4);
    if (lm_status st = check_experts(dims, it->row_expert, &why); st != LM_OK) return bad(st, why);
  }
  return true;
}

void ServerImpl::respond(Item* it, const float* delta) {
  Channel* ch = it->ch;
  Slot& slot = ch->map.header()->slots[it->slot];
  if (it->status == LM_OK && it->rows > 0 && delta != nullptr) {
    const SlotLayout l = slot_layout(it->rows, it->h_in, it->n_out);
    std::memcpy(ch->map.slot_data(it->slot) + l.delta, delta, static_cast<size_t>(it->rows) * it->n_out * 4);
  }
  slot.status = it->status;
  const size_t n = std::min(it->message.size(), static_cast<size_t>(kMessageBytes - 1));
  std::memcpy(slot.message, it->message.data(), n);
  slot.message[n] = '\0';
  const int64_t done = now_ns();
  slot.seen_ns = it->since;
  slot.run_ns = it->run_ns > 0 ? it->run_ns : done;
  slot.done_ns = done;
  ch->answered[it->slot] = it->seq;
  ch->answered_at[it->slot] = done;
  // Validated fields only index the gap table (an invalid item answers with no expected post).
  const bool keyed = it->status == LM_OK && it->layer >= 0 && it->layer < opt_.n_layers && it->site >= kSiteQkv &&
                     it->site <= kSiteDown;
  ch->last_key = keyed ? it->layer * 4 + it->site : -1;
  ch->last_answer_ns = done;
  // seq_cst store, then the flag: a worker that raised it before this store is woken; one that
  // raises it after re-reads resp_seq and sees the response (shm_client.cpp, wait()).
  slot.resp_seq.store(it->seq, std::memory_order_seq_cst);
  ch->woke_worker = slot.worker_sleeping.load(std::memory_order_seq_cst) != 0;
  if (ch->woke_worker) futex_wake(&slot.resp_seq);
}

void ServerImpl::run(std::vector<Item*>& batch, const Tables* tables) {
  const Item& first = *batch.front();
  const int32_t h_in = first.h_in, n_out = first.n_out;
  int64_t rows = 0;
  std::vector<BatchPart> parts;
  for (Item* it : batch) {
    rows += it->rows;
    const SlotLayout l = slot_layout(it->rows, h_in, n_out);
    parts.push_back({reinterpret_cast<const float*>(it->ch->map.slot_data(it->slot) + l.x), &it->row_slot, &it->row_expert});
  }
  std::vector<float> y;
  // Under fifo a prefill-sized batch runs at normal priority (priority.h, rt_rows).
  const priority::Lowered lowered(rows > priority::rt_rows());
  const int64_t started = now_ns();
  for (Item* it : batch) it->run_ns = started;
  const lm_status status = apply_batch(*tables, opt_.n_experts, first.layer, first.site, first.moe, h_in, n_out, parts, &y);
  const bool probe = site_probe::on();
  const int64_t applied = probe ? site_probe::now() : 0;
  if (probe) site_probe::add(site_probe::kServerApply, applied - started);
  {
    // Counted before the answers: a worker that has its delta reads stats that include it.
    std::lock_guard<std::mutex> g(mu_);
    stats_.native_calls++;
    stats_.work_items += batch.size();
    stats_.rows += static_cast<uint64_t>(rows);
  }
  int64_t r = 0;
  const std::string message = status == LM_OK ? "" : lm_last_error();
  for (Item* it : batch) {
    it->status = status;
    it->message = message;
    respond(it, y.data() + r * n_out);
    r += it->rows;
  }
  const int64_t answered = probe ? site_probe::now() : 0;
  if (probe) site_probe::add(site_probe::kServerRespond, answered - applied);
  // Rows per adapter, for the server's per-adapter metrics (counted like the stream path's).
  std::map<int32_t, uint64_t> per_slot;
  for (const Item* it : batch)
    for (int32_t s : it->row_slot)
      if (s >= 0) per_slot[s]++;
  std::lock_guard<std::mutex> g(mu_);
  for (const auto& [s, n] : per_slot)
    if (static_cast<size_t>(s) < tables->slot_names.size() && !tables->slot_names[s].empty())
      stats_.adapter_rows[tables->slot_names[s]] += n;
  if (probe) site_probe::add(site_probe::kServerAfter, site_probe::now() - answered);
}

void ServerImpl::loop() {
  name_this_thread("lm-ring-server");
  // The expected post's timed self-wake is tens of µs before the post: no default 50 µs timer
  // slack (a SCHED_FIFO thread has none anyway; this is for the other settings).
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  priority::raise_this_thread();
  const int policy = sched_getscheduler(0);
  const bool realtime = policy == SCHED_FIFO || policy == SCHED_RR;
  ring_thread_slice();
  std::vector<Item> items;
  std::vector<std::atomic<uint32_t>*> words;
  std::vector<uint32_t> expected;
  for (;;) {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (stopping_) break;
    }
    // Read the bells before scanning, so a post after the scan changes a word we then wait on.
    words.assign(1, &control_);
    expected.assign(1, control_.load(std::memory_order_acquire));
    take_incoming();
    const int64_t now = now_ns();
    if (now - last_housekeeping_ > kHousekeepingNs) housekeeping(now);
    for (auto& ch : channels_) {
      words.push_back(&ch->map.header()->server_bell);
      expected.push_back(words.back()->load(std::memory_order_acquire));
    }
    // The step words before the scan: a post seen in this scan is not waited for again.
    for (auto& ch : channels_) {
      const Header* hd = ch->map.header();
      const uint32_t word = hd->worker_stepping.load(std::memory_order_acquire);
      if ((word & 1) != 0 && word != ch->step_word) ch->stepping_ns = now;
      ch->step_word = word;
    }
    items.clear();
    collect(now, &items);
    std::shared_ptr<const Tables> tables;
    {
      std::lock_guard<std::mutex> g(mu_);
      tables = tables_;
    }
    // Malformed requests and unknown adapters are answered at once, alone.
    std::vector<Item*> valid;
    for (Item& it : items) {
      if (validate(&it, tables.get())) valid.push_back(&it);
      else respond(&it, nullptr);
    }
    if (!valid.empty()) {
      // Due: when every recently active worker is blocked on a post nothing more can arrive, so the
      // earliest site runs (workers that lag catch up and fall into step); otherwise the site whose
      // post has waited a full window runs, oldest first, so no worker waits on another for long.
      bool all_blocked = true;
      for (auto& ch : channels_) {
        const bool active = ch->last_post_ns > 0 && now - ch->last_post_ns <= opt_.active_us * 1000;
        const bool blocked = std::any_of(valid.begin(), valid.end(), [&](Item* it) { return it->ch == ch.get(); });
        if (active && !blocked) all_blocked = false;
      }
      Item* oldest = *std::min_element(valid.begin(), valid.end(), [](Item* a, Item* b) { return a->since < b->since; });
      Item* due = nullptr;
      if (all_blocked) {
        due = *std::min_element(valid.begin(), valid.end(), [](Item* a, Item* b) {
          return a->layer * 4 + a->site < b->layer * 4 + b->site;
        });
      } else if (now - oldest->since >= opt_.window_us * 1000) {
        due = oldest;
      }
      if (due) {
        std::vector<Item*> batch;
        for (Item* it : valid)
          if (it->layer == due->layer && it->site == due->site && it->moe == due->moe) batch.push_back(it);
        run(batch, tables.get());
        found_ = kFoundBusy;
        continue;
      }
    }
    const int64_t window_left =
        valid.empty() ? kHousekeepingNs
                      : opt_.window_us * 1000 - (now - (*std::min_element(valid.begin(), valid.end(), [](Item* a, Item* b) {
                                                          return a->since < b->since;
                                                        }))->since);
    const int64_t base_timeout = std::max<int64_t>(0, std::min(window_left, kHousekeepingNs));
    // The expected post: the earliest window [from, until) in which an attached worker inside a
    // step should post, from its gap after the site last answered (or, for a step that just began
    // with no post yet, begin_step's pre-wake: the first post follows the step's first ops).
    int64_t expect_from = INT64_MAX, expect_until = 0;
    for (auto& ch : channels_) {
      if (kStepSpinNs <= 0 || (ch->step_word & 1) == 0) continue;
      int64_t from = INT64_MAX, until = 0;
      if (ch->stepping_ns > ch->last_post_ns) {
        from = ch->stepping_ns, until = ch->stepping_ns + kStepSpinNs;
      } else if (ch->last_key >= 0 && static_cast<size_t>(ch->last_key) < ch->gap_ns.size()) {
        const int64_t gap = ch->gap_ns[static_cast<size_t>(ch->last_key)];
        if (gap < kStepSpinNs) {
          from = ch->last_answer_ns, until = ch->last_answer_ns + kStepSpinNs;
        } else if (gap <= kExpectMaxNs) {
          from = ch->last_answer_ns + gap - kWakeLeadNs, until = ch->last_answer_ns + gap + kStepSpinNs;
        }
      }
      if (realtime && kGapSpinNs > 0) {
        // Spin from now up to the budget after the step's start (no post yet) or the last answer,
        // unless this gap was longer than the budget last time (then sleep, as before).
        int64_t since = -1;
        if (ch->stepping_ns > ch->last_post_ns) {
          since = ch->stepping_ns;
        } else if (ch->last_key >= 0 && static_cast<size_t>(ch->last_key) < ch->gap_ns.size() &&
                   ch->gap_ns[static_cast<size_t>(ch->last_key)] <= kGapSpinMaxNs) {
          since = ch->last_answer_ns;
        }
        if (since >= 0 && since + kGapSpinNs > now) from = std::min(from, now), until = std::max(until, since + kGapSpinNs);
      }
      if (until > now && from < expect_from) expect_from = from, expect_until = until;
    }
    // A spin that was descheduled means the cores are oversubscribed: no long spins for a while.
    const bool expecting = expect_until > now && now >= contended_until_;
    const bool stepping = expecting && now >= expect_from;  // spin now; else sleep until expect_from
    const int64_t timeout =
        expecting && !stepping ? std::min(base_timeout, expect_from - now) : base_timeout;
    const auto any_stepping = [&] {
      for (auto& ch : channels_)
        if ((ch->map.header()->worker_stepping.load(std::memory_order_acquire) & 1) != 0) return true;
      return false;
    };
    const int64_t spin_ns = stepping ? std::max(kSpinNs, expect_until - now) : (expecting ? 0 : kSpinNs);
    if (stepping) {
      found_ = kFoundExpectSpin;
    } else if (expecting) {
      found_ = kFoundTimedNap;
    } else if (expect_until > now) {
      found_ = kFoundContended;
    } else {
      found_ = kFoundIdle;
      for (auto& ch : channels_)
        if ((ch->step_word & 1) != 0) found_ = kFoundNoExpectation;
    }
    // Spin first (with pause): the next post usually follows within microseconds, and a sleeping
    // thread costs a futex wake-up. Then raise every segment's sleeping flag, so workers ring the
    // futex; futex_waitv re-checks the words, so a post between the scan and the sleep is not lost.
    // A step that ends stops the long spin (back to the short one, then sleep).
    bool preempted = false;
    bool changed = spin_for(
        std::min(timeout, spin_ns),
        [&] {
          for (size_t i = 0; i < words.size(); i++)
            if (words[i]->load(std::memory_order_acquire) != expected[i]) return true;
          return stepping && !any_stepping();
        },
        &preempted, realtime ? kYieldNs : 0);
    if (preempted) {
      if (!realtime) contended_until_ = now_ns() + kContendedNs;
      preempted_spins_.fetch_add(1, std::memory_order_relaxed);
    }
    // A spin that ended without a post: the thread sleeps now (the expected post came late).
    if (!changed && found_ == kFoundExpectSpin) found_ = kFoundLate;
    // A real-time thread whose spin was cut short by the hypervisor goes round again: the rest of
    // its window is still worth spinning (it sleeps once the window has passed).
    if (!changed && !(preempted && realtime) && (timeout > spin_ns || preempted)) {
      for (auto& ch : channels_) ch->map.header()->server_sleeping.store(1, std::memory_order_seq_cst);
      const int64_t nap = timeout > spin_ns ? timeout - spin_ns : timeout;
      futex_wait_any(words.data(), expected.data(), static_cast<int>(words.size()), nap);
      for (auto& ch : channels_) ch->map.header()->server_sleeping.store(0, std::memory_order_relaxed);
    }
  }
  while (!channels_.empty()) detach(channels_.size() - 1, "LoRA server stopping");
  take_incoming();
  while (!channels_.empty()) detach(channels_.size() - 1, "LoRA server stopping");
}

}  // namespace

std::shared_ptr<Server> Server::start(const ServerOptions& options) {
  reap_dead_segments();
  return std::make_shared<ServerImpl>(options);
}

}  // namespace lm::shm
