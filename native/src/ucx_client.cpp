// The worker's end of the UCX site transport: UcxSiteBackend implements lm::SiteBackend over one
// UCP endpoint to a LoRA server. post() sends the site as an active message; wait() progresses the
// worker (spinning briefly, then sleeping on its event fd) until the reply for the ticket arrived,
// the endpoint failed, or the timeout passed: then LM_ERR_UNAVAILABLE, and the backend is broken
// from then on (later posts fail fast), so the worker's retry and failover path takes over.
#include "ucx_site.h"

#ifdef LM_WITH_UCX
#include <arpa/inet.h>
#include <netdb.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"
#include "ucx_common.h"

namespace lm::ucx {

namespace {

constexpr int64_t kSpinNs = 30'000;
constexpr int64_t kNapNs = 5'000'000;

struct Pending {
  float* delta = nullptr;
  int64_t count = 0;  // rows · n_out
  bool done = false;
  lm_status status = LM_OK;
  std::string message;
  std::vector<uint8_t> payload;  // the request's payload, alive until UCX sent it
  std::vector<float> landing;    // a rendezvous delta lands here (never in the step's buffer, which a timeout frees)
  RequestHeader header{};
  ucs_status_ptr_t send = nullptr;
};

bool parse_key(const std::string& text, uint8_t* out) {
  if (text.size() != kKeyBytes * 2) return false;
  for (uint32_t i = 0; i < kKeyBytes; i++) {
    unsigned v = 0;
    if (sscanf(text.c_str() + 2 * i, "%2x", &v) != 1) return false;
    out[i] = static_cast<uint8_t>(v);
  }
  return true;
}

class UcxSiteBackend final : public SiteBackend {
 public:
  ~UcxSiteBackend() override { teardown(); }

  lm_status init(const std::string& host, uint16_t port, const std::string& key, int64_t timeout_us) {
    if (!parse_key(key, key_)) return fail(LM_ERR_ARGUMENT, "malformed UCX session key");
    addrinfo hints{};
    hints.ai_family = AF_INET;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr)
      return fail(LM_ERR_UNAVAILABLE, "cannot resolve the LoRA server's UCX host " + host);
    sockaddr_in addr{};
    std::memcpy(&addr, res->ai_addr, sizeof addr);
    freeaddrinfo(res);
    addr.sin_port = htons(port);
    if (lm_status s = create_worker(&context_, &worker_); s != LM_OK) return s;
    ucp_am_handler_param_t am{};
    am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    am.id = kReplyAm;
    am.cb = &UcxSiteBackend::on_reply;
    am.arg = this;
    if (ucs_status_t s = ucp_worker_set_am_recv_handler(worker_, &am); s != UCS_OK) return fail_ucs("UCX AM handler", s);
    ucp_ep_params_t ep = client_endpoint_params(addr, &UcxSiteBackend::on_ep_error, this);
    if (ucs_status_t s = ucp_ep_create(worker_, &ep, &ep_); s != UCS_OK)
      return fail_ucs("UCX connect to " + host + ":" + std::to_string(port), s);
    // One round trip checks the path and the key before any site relies on them.
    std::lock_guard<std::mutex> g(mu_);
    RequestHeader h{};
    h.op = kOpHello;
    uint64_t ticket = 0;
    if (lm_status s = send_locked(h, {}, nullptr, 0, &ticket); s != LM_OK) return s;
    return wait_locked(ticket, timeout_us, "connect");
  }

  lm_status begin_step(const char* const* adapter_ids, int32_t n) override {
    if (n < 0 || n > static_cast<int32_t>(kMaxAdapters))
      return fail(LM_ERR_ARGUMENT, "a step names more than " + std::to_string(kMaxAdapters) + " adapters");
    std::string blob;
    for (int32_t i = 0; i < n; i++) {
      blob += adapter_ids[i];
      blob.push_back('\0');
    }
    if (blob.size() > kIdsBytes) return fail(LM_ERR_ARGUMENT, "adapter ids of a step exceed the UCX request's id area");
    std::lock_guard<std::mutex> g(mu_);
    ids_[std::this_thread::get_id()] = {std::move(blob), n};
    return LM_OK;
  }

  lm_status post(const SiteCall& call, uint64_t* ticket) override {
    if (call.site < kSiteQkv || call.site > kSiteDown || call.layer < 0 || call.rows < 0 || call.rows > kMaxRows ||
        call.in_features <= 0 || call.out_features <= 0)
      return fail(LM_ERR_ARGUMENT, "bad site call");
    RequestHeader h{};
    h.op = kOpSite;
    h.layer = call.layer;
    h.site = call.site;
    h.rows = static_cast<int32_t>(call.rows);
    h.h_in = static_cast<int32_t>(call.in_features);
    h.n_out = static_cast<int32_t>(call.out_features);
    h.moe = call.row_expert ? 1 : 0;
    std::lock_guard<std::mutex> g(mu_);
    auto step = ids_.find(std::this_thread::get_id());
    if (step == ids_.end()) return fail(LM_ERR_ARGUMENT, "UCX site posted outside a step (no begin_step on this thread)");
    const std::string& ids = step->second.first;
    h.n_adapters = step->second.second;
    h.ids_bytes = static_cast<uint32_t>(ids.size());
    const size_t rows = static_cast<size_t>(call.rows);
    std::vector<uint8_t> payload(ids.size() + rows * 4 * (h.moe ? 2 : 1) + rows * call.in_features * 4);
    uint8_t* p = payload.data();
    std::memcpy(p, ids.data(), ids.size());
    p += ids.size();
    std::memcpy(p, call.row_adapter, rows * 4);
    p += rows * 4;
    if (h.moe) {
      std::memcpy(p, call.row_expert, rows * 4);
      p += rows * 4;
    }
    std::memcpy(p, call.x, rows * call.in_features * 4);
    return send_locked(h, std::move(payload), call.delta, call.rows * call.out_features, ticket);
  }

  lm_status wait(uint64_t ticket, int64_t timeout_us) override {
    std::lock_guard<std::mutex> g(mu_);
    return wait_locked(ticket, timeout_us, "site");
  }

  void end_step() override {
    std::lock_guard<std::mutex> g(mu_);
    ids_.erase(std::this_thread::get_id());
  }

  // Called from the JS thread: never waits for the mutex a site's wait() holds while it progresses.
  void close() { closed_.store(true, std::memory_order_release); }

  bool check() {
    if (closed_.load(std::memory_order_acquire) || failed_.load(std::memory_order_acquire)) return false;
    std::unique_lock<std::mutex> g(mu_, std::try_to_lock);
    if (g.owns_lock() && worker_) ucp_worker_progress(worker_);  // else a wait is progressing it now
    return !failed_.load(std::memory_order_acquire);
  }

 private:
  static void on_ep_error(void* arg, ucp_ep_h, ucs_status_t status) {
    auto* self = static_cast<UcxSiteBackend*>(arg);
    self->set_broken(std::string("the UCX connection to the LoRA server failed: ") + ucs_status_string(status));
  }
  static void on_reply_data(void* request, ucs_status_t status, size_t, void* user_data) {
    auto* p = static_cast<Pending*>(user_data);
    p->done = true;
    if (status != UCS_OK) {
      p->status = LM_ERR_UNAVAILABLE;
      p->message = std::string("receiving a delta failed: ") + ucs_status_string(status);
    }
    ucp_request_free(request);
  }
  static ucs_status_t on_reply(void* arg, const void* header, size_t header_length, void* data, size_t length,
                               const ucp_am_recv_param_t* param) {
    return static_cast<UcxSiteBackend*>(arg)->reply(header, header_length, data, length, param);
  }

  // Runs inside ucp_worker_progress, under mu_.
  ucs_status_t reply(const void* header, size_t header_length, void* data, size_t length, const ucp_am_recv_param_t* param) {
    const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    ReplyHeader h{};
    auto it = pending_.end();
    if (header_length == sizeof h) {
      std::memcpy(&h, header, sizeof h);
      it = pending_.find(h.ticket);
    }
    if (h.magic != kMagic || it == pending_.end() || it->second.done) {
      if (rndv) ucp_am_data_release(worker_, data);
      return UCS_OK;  // a reply to a ticket given up on (timed out): dropped
    }
    Pending& p = it->second;
    h.message[kMessageBytes - 1] = '\0';
    p.status = static_cast<lm_status>(h.status);
    p.message = h.message;
    const size_t want = static_cast<size_t>(p.count) * 4;
    if (p.status != LM_OK || want == 0) {
      if (rndv) ucp_am_data_release(worker_, data);
      p.done = true;
      return UCS_OK;
    }
    if (length != want || static_cast<int64_t>(h.rows) * h.n_out != p.count) {
      if (rndv) ucp_am_data_release(worker_, data);
      p.status = LM_ERR_UNAVAILABLE;
      p.message = "the LoRA server's delta has the wrong size";
      p.done = true;
      return UCS_OK;
    }
    if (!rndv) {
      std::memcpy(p.delta, data, want);
      p.done = true;
      return UCS_OK;
    }
    ucp_request_param_t rp{};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    rp.cb.recv_am = &UcxSiteBackend::on_reply_data;
    rp.user_data = &p;
    p.landing.resize(static_cast<size_t>(p.count));
    ucs_status_ptr_t st = ucp_am_recv_data_nbx(worker_, data, p.landing.data(), want, &rp);
    if (st == nullptr) p.done = true;
    else if (UCS_PTR_IS_ERR(st)) {
      p.status = LM_ERR_UNAVAILABLE;
      p.message = std::string("receiving a delta failed: ") + ucs_status_string(UCS_PTR_STATUS(st));
      p.done = true;
    }
    return UCS_OK;
  }

  // Caller holds mu_ (broken_ is written only under it; failed_ mirrors it for lock-free readers).
  void set_broken(const std::string& why) {
    if (!broken_.empty()) return;
    broken_ = why;
    failed_.store(true, std::memory_order_release);
  }

  lm_status usable_locked() {
    if (closed_.load(std::memory_order_acquire)) return fail(LM_ERR_UNAVAILABLE, "the UCX connection is closed");
    if (!broken_.empty()) return fail(LM_ERR_UNAVAILABLE, broken_);
    return LM_OK;
  }

  lm_status send_locked(RequestHeader h, std::vector<uint8_t> payload, float* delta, int64_t count, uint64_t* ticket) {
    if (lm_status s = usable_locked(); s != LM_OK) return s;
    h.magic = kMagic;
    std::memcpy(h.key, key_, kKeyBytes);
    h.ticket = ++next_ticket_;
    Pending& p = pending_[h.ticket];
    p.delta = delta;
    p.count = count;
    p.payload = std::move(payload);
    p.header = h;
    ucp_request_param_t rp{};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    rp.flags = UCP_AM_SEND_FLAG_REPLY;
    ucs_status_ptr_t st = ucp_am_send_nbx(ep_, kRequestAm, &p.header, sizeof p.header, p.payload.data(), p.payload.size(), &rp);
    if (UCS_PTR_IS_ERR(st)) {
      pending_.erase(h.ticket);
      set_broken(std::string("sending a site over UCX failed: ") + ucs_status_string(UCS_PTR_STATUS(st)));
      return fail(LM_ERR_UNAVAILABLE, broken_);
    }
    p.send = st;
    *ticket = h.ticket;
    return LM_OK;
  }

  lm_status wait_locked(uint64_t ticket, int64_t timeout_us, const char* what) {
    auto it = pending_.find(ticket);
    if (it == pending_.end()) return fail(LM_ERR_ARGUMENT, "unknown ticket");
    Pending& p = it->second;
    const int64_t start = now_ns(), deadline = start + (timeout_us < 0 ? INT64_MAX / 2 : timeout_us * 1000);
    while (!p.done && broken_.empty()) {
      if (ucp_worker_progress(worker_) != 0) continue;
      const int64_t now = now_ns();
      if (now >= deadline) break;
      if (now - start > kSpinNs) sleep_on_worker(worker_, -1, std::min(kNapNs, deadline - now));
    }
    if (!p.done) {
      set_broken(std::string("the LoRA server did not answer a ") + what + " over UCX within " +
                 std::to_string(timeout_us / 1000) + " ms");
      release_send(p);
      // A rendezvous receive may still write into it: kept (same address) until teardown.
      abandoned_.push_back(pending_.extract(it));
      return fail(LM_ERR_UNAVAILABLE, broken_);
    }
    release_send(p);
    if (p.status == LM_OK && !p.landing.empty()) std::memcpy(p.delta, p.landing.data(), p.landing.size() * 4);
    const lm_status status = p.status;
    const std::string message = p.message;
    pending_.erase(it);
    if (status == LM_OK) return LM_OK;
    const bool known = status == LM_ERR_NOT_FOUND || status == LM_ERR_ARGUMENT || status == LM_ERR_SHAPE ||
                       status == LM_ERR_SLOT || status == LM_ERR_DTYPE;
    if (!known) set_broken("LoRA server: " + message);
    return fail(known ? status : LM_ERR_UNAVAILABLE, "LoRA server: " + message);
  }

  // The send completed (the reply came after it) or is abandoned: let go of its request.
  void release_send(Pending& p) {
    if (p.send == nullptr) return;
    if (ucp_request_check_status(p.send) == UCS_INPROGRESS) ucp_request_cancel(worker_, p.send);
    ucp_request_free(p.send);
    p.send = nullptr;
  }

  void teardown() {
    if (!worker_) return;
    for (auto& [t, p] : pending_) release_send(p);
    if (ep_) {
      ucp_request_param_t rp{};
      rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      rp.flags = UCP_EP_CLOSE_FLAG_FORCE;
      wait_request(worker_, ucp_ep_close_nbx(ep_, &rp), 1'000'000'000);
      ep_ = nullptr;
    }
    destroy_worker(context_, worker_);
    pending_.clear();
    abandoned_.clear();
    worker_ = nullptr;
    context_ = nullptr;
  }

  std::mutex mu_;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  uint8_t key_[kKeyBytes] = {0};
  std::atomic<bool> closed_{false};
  std::atomic<bool> failed_{false};
  std::string broken_;
  // Each thread's step ids: the native step thread and the JS path's libuv threads share one
  // connection, and each posts against the ids its own begin_step named.
  std::map<std::thread::id, std::pair<std::string, int32_t>> ids_;
  uint64_t next_ticket_ = 0;
  std::map<uint64_t, Pending> pending_;
  std::vector<std::map<uint64_t, Pending>::node_type> abandoned_;
};

}  // namespace

lm_status connect(const std::string& host, uint16_t port, const std::string& key, int64_t timeout_us,
                  std::shared_ptr<SiteBackend>* out) {
  auto backend = std::make_shared<UcxSiteBackend>();
  if (lm_status s = backend->init(host, port, key, timeout_us); s != LM_OK) return s;
  *out = backend;
  return LM_OK;
}

void close_backend(SiteBackend* backend) {
  if (auto* b = dynamic_cast<UcxSiteBackend*>(backend)) b->close();
}

bool backend_check(SiteBackend* backend) {
  auto* b = dynamic_cast<UcxSiteBackend*>(backend);
  return b != nullptr && b->check();
}

bool is_backend(SiteBackend* backend) { return dynamic_cast<UcxSiteBackend*>(backend) != nullptr; }

}  // namespace lm::ucx

#else

#include "common.h"

namespace lm::ucx {
lm_status connect(const std::string&, uint16_t, const std::string&, int64_t, std::shared_ptr<SiteBackend>*) {
  return fail(LM_ERR_UNAVAILABLE, "this build of the native core has no UCX (install libucx-dev and rebuild)");
}
void close_backend(SiteBackend*) {}
bool backend_check(SiteBackend*) { return false; }
bool is_backend(SiteBackend*) { return false; }
}  // namespace lm::ucx

#endif
