// The LoRA server's UCX thread (ucx_site.h): a UCP worker with a listener, one endpoint per
// connected base worker. Requests arrive as active messages (eager: copied in the callback;
// rendezvous: received into the request's buffer); each pass of the loop validates what arrived,
// batches requests for the same (layer, site) across workers, runs the shared batched kernel once
// per batch (site_compute.h) and replies to each request with its rows of the delta.
//
// Why active messages rather than tag matching or an RMA put into a registered ring: a request is
// self-describing (its header carries the site and sizes), UCX picks eager or rendezvous per size
// and transport, and the server needs no per-worker buffer registration or tag bookkeeping; the
// reply goes back on the endpoint the request came in on.
#include "ucx_site.h"

#ifdef LM_WITH_UCX
#include <arpa/inet.h>
#include <netdb.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <list>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include "common.h"
#include "ucx_common.h"

namespace lm::ucx {

namespace {

constexpr int64_t kSpinNs = 20'000;    // progress before sleeping: the next request often follows at once
constexpr int64_t kNapNs = 10'000'000;

// One received request (its payload complete once `ready`).
struct Request {
  ucp_ep_h ep = nullptr;
  RequestHeader h{};
  std::vector<uint8_t> payload;
  bool ready = false;
  bool failed = false;
  // Filled by validation.
  lm_status status = LM_OK;
  std::string message;
  std::vector<int32_t> row_slot, row_expert;
};

// A reply in flight: header and payload live until UCX is done with them.
struct Send {
  ReplyHeader h{};
  std::vector<float> delta;
};

std::string hex(const uint8_t* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; i++) s += d[p[i] >> 4], s += d[p[i] & 15];
  return s;
}

lm_status resolve_ipv4(const std::string& host, sockaddr_in* out) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr)
    return fail(LM_ERR_ARGUMENT, "cannot resolve the UCX bind host " + host);
  std::memcpy(out, res->ai_addr, sizeof(sockaddr_in));
  freeaddrinfo(res);
  return LM_OK;
}

class ServerImpl final : public Server {
 public:
  explicit ServerImpl(const ServerOptions& o) : opt_(o) {}
  ~ServerImpl() override {
    stop();
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  lm_status init() {
    sockaddr_in addr{};
    if (lm_status s = resolve_ipv4(opt_.bind_host, &addr); s != LM_OK) return s;
    addr.sin_port = 0;
    if (lm_status s = create_worker(&context_, &worker_); s != LM_OK) return s;
    ucp_am_handler_param_t am{};
    am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    am.id = kRequestAm;
    am.cb = &ServerImpl::on_request;
    am.arg = this;
    if (ucs_status_t s = ucp_worker_set_am_recv_handler(worker_, &am); s != UCS_OK) return fail_ucs("UCX AM handler", s);
    const std::string what = "UCX listener on " + opt_.bind_host;
    if (lm_status s = start_listener(worker_, addr, &ServerImpl::on_connect, this, what, &listener_, &port_, &host_);
        s != LM_OK)
      return s;
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    thread_ = std::thread([this] { loop(); });
    return LM_OK;
  }

  lm_status attach(const std::string&, std::string* host, uint16_t* port, std::string* key) override {
    uint8_t raw[kKeyBytes];
    std::random_device rd;
    for (uint32_t i = 0; i < kKeyBytes; i += 4) {
      const uint32_t v = rd();
      std::memcpy(raw + i, &v, 4);
    }
    std::lock_guard<std::mutex> g(mu_);
    if (stopping_) return fail(LM_ERR_UNAVAILABLE, "LoRA server is stopping");
    keys_.insert(std::string(reinterpret_cast<char*>(raw), kKeyBytes));
    *host = host_;
    *port = port_;
    *key = hex(raw, kKeyBytes);
    return LM_OK;
  }

  void set_tables(std::shared_ptr<const Tables> tables) override {
    std::lock_guard<std::mutex> g(mu_);
    tables_ = std::move(tables);
  }

  ServerStats stats() override {
    std::lock_guard<std::mutex> g(mu_);
    return stats_;
  }

  void stop() override {
    {
      std::lock_guard<std::mutex> g(mu_);
      stopping_ = true;
    }
    if (wake_fd_ >= 0) {
      const uint64_t one = 1;
      (void)!write(wake_fd_, &one, sizeof one);
    }
    if (thread_.joinable()) thread_.join();
    teardown();
  }

 private:
  static void on_connect(ucp_conn_request_h conn, void* arg) { static_cast<ServerImpl*>(arg)->accept(conn); }
  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t) { static_cast<ServerImpl*>(arg)->failed_.insert(ep); }
  static ucs_status_t on_request(void* arg, const void* header, size_t header_length, void* data, size_t length,
                                 const ucp_am_recv_param_t* param) {
    return static_cast<ServerImpl*>(arg)->receive(header, header_length, data, length, param);
  }
  static void on_request_data(void* request, ucs_status_t status, size_t, void* user_data) {
    auto* r = static_cast<Request*>(user_data);
    r->ready = true;
    r->failed = status != UCS_OK;
    ucp_request_free(request);
  }

  void accept(ucp_conn_request_h conn) {
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.conn_request = conn;
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &ServerImpl::on_ep_error;
    ep.err_handler.arg = this;
    ucp_ep_h h = nullptr;
    if (ucp_ep_create(worker_, &ep, &h) == UCS_OK) eps_.insert(h);
  }

  ucs_status_t receive(const void* header, size_t header_length, void* data, size_t length, const ucp_am_recv_param_t* param) {
    const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    auto drop = [&]() {
      if (rndv) ucp_am_data_release(worker_, data);
      std::lock_guard<std::mutex> g(mu_);
      stats_.rejected++;
      return UCS_OK;
    };
    if (header_length != sizeof(RequestHeader) || param->reply_ep == nullptr) return drop();
    auto r = std::make_unique<Request>();
    std::memcpy(&r->h, header, sizeof(RequestHeader));
    r->ep = param->reply_ep;
    const int64_t expected = r->h.magic == kMagic ? request_payload_bytes(r->h) : -1;
    if (r->h.op == kOpHello) {
      if (length != 0 || rndv) return drop();
      r->ready = true;
    } else if (r->h.op != kOpSite || expected < 0 || static_cast<int64_t>(length) != expected) {
      return drop();
    } else {
      r->payload.resize(length);
      if (!rndv) {
        if (length > 0) std::memcpy(r->payload.data(), data, length);
        r->ready = true;
      } else {
        ucp_request_param_t p{};
        p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
        p.cb.recv_am = &ServerImpl::on_request_data;
        p.user_data = r.get();
        ucs_status_ptr_t st = ucp_am_recv_data_nbx(worker_, data, r->payload.data(), length, &p);
        if (UCS_PTR_IS_ERR(st)) return drop();
        if (st == nullptr) r->ready = true;
      }
    }
    requests_.push_back(std::move(r));
    return UCS_OK;
  }

  bool authorized(const Request& r) {
    std::lock_guard<std::mutex> g(mu_);
    return keys_.count(std::string(reinterpret_cast<const char*>(r.h.key), kKeyBytes)) > 0;
  }

  void reply(Request* r, const float* delta) {
    auto* s = new Send();
    s->h.magic = kMagic;
    s->h.status = r->status;
    s->h.ticket = r->h.ticket;
    s->h.rows = r->h.rows;
    s->h.n_out = r->h.n_out;
    const size_t n = std::min(r->message.size(), static_cast<size_t>(kMessageBytes - 1));
    std::memcpy(s->h.message, r->message.data(), n);
    s->h.message[n] = '\0';
    if (r->status == LM_OK && r->h.op == kOpSite && delta != nullptr)
      s->delta.assign(delta, delta + static_cast<size_t>(r->h.rows) * r->h.n_out);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = [](void* req, ucs_status_t, void* user) {
      delete static_cast<Send*>(user);
      ucp_request_free(req);
    };
    p.user_data = s;
    ucs_status_ptr_t st = ucp_am_send_nbx(r->ep, kReplyAm, &s->h, sizeof s->h, s->delta.data(), s->delta.size() * 4, &p);
    if (st == nullptr || UCS_PTR_IS_ERR(st)) delete s;
  }

  bool validate(Request* r, const Tables& tables);
  void serve(std::vector<std::unique_ptr<Request>>& ready);
  void close_failed();
  void loop();
  void teardown();

  const ServerOptions opt_;
  std::mutex mu_;
  bool stopping_ = false;
  std::set<std::string> keys_;
  std::shared_ptr<const Tables> tables_ = std::make_shared<Tables>();
  ServerStats stats_;
  std::string host_;
  uint16_t port_ = 0;
  int wake_fd_ = -1;
  std::thread thread_;
  // Thread-owned (and init's, before the thread starts).
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_listener_h listener_ = nullptr;
  std::set<ucp_ep_h> eps_, failed_;
  std::list<std::unique_ptr<Request>> requests_;
};

bool ServerImpl::validate(Request* r, const Tables& tables) {
  const RequestHeader& h = r->h;
  if (lm_status s = check_site(opt_.dims, h.layer, h.site, h.moe, h.h_in, h.n_out, &r->message); s != LM_OK) {
    r->status = s;
    return false;
  }
  const uint8_t* p = r->payload.data();
  const std::string ids(reinterpret_cast<const char*>(p), h.ids_bytes);
  p += h.ids_bytes;
  r->row_slot.resize(static_cast<size_t>(h.rows));
  std::memcpy(r->row_slot.data(), p, static_cast<size_t>(h.rows) * 4);
  p += static_cast<size_t>(h.rows) * 4;
  if ((r->status = resolve_rows(tables, ids, h.n_adapters, &r->row_slot, &r->message)) != LM_OK) return false;
  if (h.moe) {
    r->row_expert.resize(static_cast<size_t>(h.rows));
    std::memcpy(r->row_expert.data(), p, static_cast<size_t>(h.rows) * 4);
    if ((r->status = check_experts(opt_.dims, r->row_expert, &r->message)) != LM_OK) return false;
  }
  return true;
}

// Validates what arrived, then runs one batch per (layer, site, moe) across every worker's requests.
void ServerImpl::serve(std::vector<std::unique_ptr<Request>>& ready) {
  std::shared_ptr<const Tables> tables;
  {
    std::lock_guard<std::mutex> g(mu_);
    tables = tables_;
  }
  std::vector<Request*> valid;
  for (auto& r : ready) {
    if (!authorized(*r)) {
      std::lock_guard<std::mutex> g(mu_);
      stats_.rejected++;
      r->status = LM_ERR_UNAVAILABLE;
      r->message = "unknown UCX session key (attach again through the LoRA server's AttachUcx)";
      reply(r.get(), nullptr);
    } else if (r->h.op == kOpHello) {
      reply(r.get(), nullptr);
    } else if (validate(r.get(), *tables)) {
      valid.push_back(r.get());
    } else {
      reply(r.get(), nullptr);
    }
  }
  while (!valid.empty()) {
    const RequestHeader& first = valid.front()->h;
    std::vector<Request*> batch, rest;
    for (Request* r : valid)
      (r->h.layer == first.layer && r->h.site == first.site && r->h.moe == first.moe ? batch : rest).push_back(r);
    std::vector<BatchPart> parts;
    int64_t rows = 0;
    for (Request* r : batch) {
      const size_t x_at = r->h.ids_bytes + static_cast<size_t>(r->h.rows) * (r->h.moe ? 8 : 4);
      parts.push_back({reinterpret_cast<const float*>(r->payload.data() + x_at), &r->row_slot, &r->row_expert});
      rows += r->h.rows;
    }
    std::vector<float> y;
    const lm_status s = apply_batch(*tables, opt_.dims.n_experts, first.layer, first.site, first.moe, first.h_in,
                                    first.n_out, parts, &y);
    const std::string message = s == LM_OK ? "" : lm_last_error();
    // Counted before the replies: a worker that has its answer reads stats that include it.
    {
      std::lock_guard<std::mutex> g(mu_);
      stats_.native_calls++;
      stats_.work_items += batch.size();
      stats_.rows += static_cast<uint64_t>(rows);
    }
    int64_t r0 = 0;
    for (Request* r : batch) {
      r->status = s;
      r->message = message;
      reply(r, y.data() + r0 * r->h.n_out);
      r0 += r->h.rows;
    }
    valid.swap(rest);
  }
}

void ServerImpl::close_failed() {
  for (ucp_ep_h ep : failed_) {
    if (!eps_.erase(ep)) continue;
    requests_.remove_if([ep](const std::unique_ptr<Request>& r) { return r->ep == ep && r->ready; });
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t st = ucp_ep_close_nbx(ep, &p);
    if (st != nullptr && !UCS_PTR_IS_ERR(st)) ucp_request_free(st);
  }
  failed_.clear();
}

void ServerImpl::loop() {
  std::vector<std::unique_ptr<Request>> ready;
  int64_t idle_since = now_ns();
  for (;;) {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (stopping_) break;
    }
    while (ucp_worker_progress(worker_) != 0) {
    }
    if (!failed_.empty()) close_failed();
    ready.clear();
    for (auto it = requests_.begin(); it != requests_.end();) {
      // A request whose endpoint was closed meanwhile (its rendezvous completed late) is dropped.
      if ((*it)->ready && !(*it)->failed && eps_.count((*it)->ep) > 0) ready.push_back(std::move(*it));
      else if ((*it)->ready) (*it)->failed = true;
      if ((*it) == nullptr || (*it)->failed) it = requests_.erase(it);
      else ++it;
    }
    {
      std::lock_guard<std::mutex> g(mu_);
      stats_.connected = eps_.size();
    }
    if (!ready.empty()) {
      serve(ready);
      idle_since = now_ns();
      continue;
    }
    if (now_ns() - idle_since < kSpinNs) continue;
    sleep_on_worker(worker_, wake_fd_, kNapNs);
    uint64_t drained;
    (void)!read(wake_fd_, &drained, sizeof drained);
    idle_since = now_ns();
  }
}

void ServerImpl::teardown() {
  if (!worker_) return;
  close_endpoints(worker_, eps_);
  if (listener_) ucp_listener_destroy(listener_);
  listener_ = nullptr;
  destroy_worker(context_, worker_);
  requests_.clear();  // after the worker: a rendezvous receive in flight writes into its request
  worker_ = nullptr;
  context_ = nullptr;
}

}  // namespace

lm_status Server::start(const ServerOptions& options, std::shared_ptr<Server>* out) {
  auto server = std::make_shared<ServerImpl>(options);
  if (lm_status s = server->init(); s != LM_OK) {
    const std::string why = lm_last_error();
    server->stop();
    return fail(s, why);
  }
  *out = server;
  return LM_OK;
}

}  // namespace lm::ucx

#else

#include "common.h"

namespace lm::ucx {
lm_status Server::start(const ServerOptions&, std::shared_ptr<Server>*) {
  return fail(LM_ERR_UNAVAILABLE, "this build of the native core has no UCX (install libucx-dev and rebuild)");
}
}  // namespace lm::ucx

#endif
