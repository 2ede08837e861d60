// Peer adapter fetch over UCX RMA (ucx_rma.h): the holder's region server and the fetcher's get.
#include "ucx_rma.h"

#ifdef LM_WITH_UCX
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "common.h"
#include "ucx_common.h"

namespace lm::ucx {

namespace {

lm_status resolve(const std::string& host, uint16_t port, sockaddr_in* out) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0 || res == nullptr)
    return fail(LM_ERR_UNAVAILABLE, "cannot resolve the UCX RMA host " + host);
  std::memcpy(out, res->ai_addr, sizeof(sockaddr_in));
  freeaddrinfo(res);
  out->sin_port = htons(port);
  return LM_OK;
}

struct Region {
  void* base = nullptr;
  uint64_t length = 0, mapped = 0;
  ucp_mem_h memh = nullptr;
};

class RegionServerImpl final : public RegionServer {
 public:
  ~RegionServerImpl() override {
    stop();
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  lm_status init(const std::string& bind_host) {
    sockaddr_in addr{};
    if (lm_status s = resolve(bind_host, 0, &addr); s != LM_OK) return fail(LM_ERR_ARGUMENT, lm_last_error());
    if (lm_status s = create_worker(&context_, &worker_, UCP_FEATURE_RMA); s != LM_OK) return s;
    const std::string what = "UCX RMA listener on " + bind_host;
    if (lm_status s = start_listener(worker_, addr, &RegionServerImpl::on_connect, this, what, &listener_, &port_, &host_);
        s != LM_OK)
      return s;
    wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    thread_ = std::thread([this] { loop(); });
    return LM_OK;
  }

  std::string host() const override { return host_; }
  uint16_t port() const override { return port_; }

  lm_status add(const uint8_t* data, uint64_t n, RegionOffer* out) override {
    Region r;
    r.length = n;
    r.mapped = n == 0 ? 1 : n;
    r.base = mmap(nullptr, r.mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r.base == MAP_FAILED) return fail(LM_ERR_MEMORY, "cannot allocate a " + std::to_string(n) + "-byte RMA region");
    if (n > 0) std::memcpy(r.base, data, n);
    std::lock_guard<std::mutex> g(mu_);
    if (!worker_) {
      munmap(r.base, r.mapped);
      return fail(LM_ERR_UNAVAILABLE, "the UCX RMA server is stopped");
    }
    ucp_mem_map_params_t mp{};
    mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
    mp.address = r.base;
    mp.length = r.mapped;
    if (ucs_status_t s = ucp_mem_map(context_, &mp, &r.memh); s != UCS_OK) {
      munmap(r.base, r.mapped);
      return fail_ucs("UCX mem_map", s);
    }
    void* packed = nullptr;
    size_t packed_size = 0;
    if (ucs_status_t s = ucp_rkey_pack(context_, r.memh, &packed, &packed_size); s != UCS_OK) {
      ucp_mem_unmap(context_, r.memh);
      munmap(r.base, r.mapped);
      return fail_ucs("UCX rkey_pack", s);
    }
    out->rkey.assign(static_cast<const char*>(packed), packed_size);
    ucp_rkey_buffer_release(packed);
    out->id = ++next_id_;
    out->address = reinterpret_cast<uint64_t>(r.base);
    out->length = n;
    regions_[out->id] = r;
    return LM_OK;
  }

  void remove(uint64_t id) override {
    std::lock_guard<std::mutex> g(mu_);
    auto it = regions_.find(id);
    if (it == regions_.end()) return;
    release(it->second);
    regions_.erase(it);
  }

  void allow(const std::string& ipv4, int64_t ttl_ms) override {
    std::lock_guard<std::mutex> g(mu_);
    allowed_[ipv4] = now_ns() + ttl_ms * 1'000'000;
  }

  RegionStats stats() override {
    std::lock_guard<std::mutex> g(mu_);
    RegionStats s = stats_;
    s.regions = regions_.size();
    for (const auto& [id, r] : regions_) s.bytes += r.length;
    return s;
  }

  void stop() override {
    stopping_ = true;
    if (wake_fd_ >= 0) {
      const uint64_t one = 1;
      (void)!write(wake_fd_, &one, sizeof one);
    }
    if (thread_.joinable()) thread_.join();
    std::lock_guard<std::mutex> g(mu_);
    teardown();
  }

 private:
  static void on_connect(ucp_conn_request_h conn, void* arg) { static_cast<RegionServerImpl*>(arg)->accept(conn); }
  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t) { static_cast<RegionServerImpl*>(arg)->failed_.insert(ep); }

  // Runs inside progress (mu_ held): only expected peers get an endpoint.
  void accept(ucp_conn_request_h conn) {
    ucp_conn_request_attr_t attr{};
    attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
    bool ok = ucp_conn_request_query(conn, &attr) == UCS_OK && attr.client_address.ss_family == AF_INET;
    if (ok) {
      char text[INET_ADDRSTRLEN] = {0};
      inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&attr.client_address)->sin_addr, text, sizeof text);
      auto it = allowed_.find(text);
      ok = it != allowed_.end() && it->second > now_ns();
    }
    if (!ok) {
      stats_.refused++;
      ucp_listener_reject(listener_, conn);
      return;
    }
    ucp_ep_params_t ep{};
    ep.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep.conn_request = conn;
    ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    ep.err_handler.cb = &RegionServerImpl::on_ep_error;
    ep.err_handler.arg = this;
    ucp_ep_h h = nullptr;
    if (ucp_ep_create(worker_, &ep, &h) == UCS_OK) {
      eps_.insert(h);
      stats_.accepted++;
    }
  }

  void close_failed() {
    for (ucp_ep_h ep : failed_) {
      if (eps_.erase(ep) == 0) continue;
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      p.flags = UCP_EP_CLOSE_FLAG_FORCE;
      ucs_status_ptr_t st = ucp_ep_close_nbx(ep, &p);
      if (UCS_PTR_IS_PTR(st)) ucp_request_free(st);  // completes with later progress
    }
    failed_.clear();
  }

  void release(Region& r) {
    if (r.memh) ucp_mem_unmap(context_, r.memh);
    if (r.base) munmap(r.base, r.mapped);
    r = Region{};
  }

  // Progresses the worker (answering emulated gets on TCP); sleeps on its event fd when idle.
  void loop() {
    while (!stopping_) {
      int efd = -1;
      bool busy = false;
      {
        std::lock_guard<std::mutex> g(mu_);
        while (ucp_worker_progress(worker_) != 0) busy = true;
        if (!failed_.empty()) close_failed();
        if (!busy && ucp_worker_arm(worker_) == UCS_ERR_BUSY) busy = true;
        if (!busy && ucp_worker_get_efd(worker_, &efd) != UCS_OK) efd = -1;
      }
      if (busy) continue;
      pollfd fds[2] = {{efd, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      poll(fds, 2, 100);
      uint64_t drained;
      (void)!read(wake_fd_, &drained, sizeof drained);
    }
  }

  void teardown() {
    if (!worker_) return;
    close_endpoints(worker_, eps_);
    if (listener_) ucp_listener_destroy(listener_);
    listener_ = nullptr;
    for (auto& [id, r] : regions_) release(r);
    regions_.clear();
    destroy_worker(context_, worker_);
    worker_ = nullptr;
    context_ = nullptr;
  }

  std::mutex mu_;  // the worker, regions, allow list and stats
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_listener_h listener_ = nullptr;
  std::set<ucp_ep_h> eps_, failed_;
  std::map<uint64_t, Region> regions_;
  std::map<std::string, int64_t> allowed_;  // ipv4 → until (now_ns)
  RegionStats stats_;
  uint64_t next_id_ = 0;
  std::string host_;
  uint16_t port_ = 0;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

void on_get_ep_error(void* arg, ucp_ep_h, ucs_status_t status) { *static_cast<ucs_status_t*>(arg) = status; }

}  // namespace

lm_status RegionServer::start(const std::string& bind_host, std::shared_ptr<RegionServer>* out) {
  auto server = std::make_shared<RegionServerImpl>();
  if (lm_status s = server->init(bind_host); s != LM_OK) {
    const std::string why = lm_last_error();
    server->stop();
    return fail(s, why);
  }
  *out = server;
  return LM_OK;
}

lm_status region_get(const std::string& host, uint16_t port, uint64_t address, const std::string& rkey,
                     uint64_t length, uint8_t* dst, int64_t timeout_us) {
  const int64_t deadline = now_ns() + timeout_us * 1000;
  sockaddr_in addr{};
  if (lm_status s = resolve(host, port, &addr); s != LM_OK) return s;
  ucp_context_h context = nullptr;
  ucp_worker_h worker = nullptr;
  if (lm_status s = create_worker(&context, &worker, UCP_FEATURE_RMA); s != LM_OK) return s;
  ucs_status_t ep_status = UCS_OK;
  ucp_ep_params_t ep = client_endpoint_params(addr, &on_get_ep_error, &ep_status);
  ucp_ep_h h = nullptr;
  lm_status result = LM_OK;
  if (ucs_status_t s = ucp_ep_create(worker, &ep, &h); s != UCS_OK) {
    destroy_worker(context, worker);
    return fail_ucs("UCX RMA connect to " + host + ":" + std::to_string(port), s);
  }
  ucp_rkey_h rk = nullptr;
  if (ucs_status_t s = ucp_ep_rkey_unpack(h, rkey.data(), &rk); s != UCS_OK) {
    result = fail_ucs("UCX rkey_unpack", s);
  } else {
    ucp_request_param_t p{};
    const ucs_status_t got = wait_request(worker, ucp_get_nbx(h, dst, length, address, rk, &p), deadline - now_ns());
    if (got != UCS_OK || ep_status != UCS_OK)
      result = fail_ucs("UCX RMA get of " + std::to_string(length) + " bytes from " + host + ":" + std::to_string(port),
                        got != UCS_OK ? got : ep_status);
    ucp_rkey_destroy(rk);
  }
  ucp_request_param_t cp{};
  cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  cp.flags = result == LM_OK ? 0 : UCP_EP_CLOSE_FLAG_FORCE;
  wait_request(worker, ucp_ep_close_nbx(h, &cp), 1'000'000'000);
  destroy_worker(context, worker);
  return result;
}

}  // namespace lm::ucx

#else

#include "common.h"

namespace lm::ucx {
lm_status RegionServer::start(const std::string&, std::shared_ptr<RegionServer>*) {
  return fail(LM_ERR_UNAVAILABLE, "this build of the native core has no UCX (install libucx-dev and rebuild)");
}
lm_status region_get(const std::string&, uint16_t, uint64_t, const std::string&, uint64_t, uint8_t*, int64_t) {
  return fail(LM_ERR_UNAVAILABLE, "this build of the native core has no UCX (install libucx-dev and rebuild)");
}
}  // namespace lm::ucx

#endif
