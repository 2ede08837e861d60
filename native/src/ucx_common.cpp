// The shared pieces of the UCX site transport (ucx_common.h), and the build-time switch: without
// UCX only available()/version() exist here (ucx_server.cpp and ucx_client.cpp supply stubs).
#include "ucx_site.h"

#ifdef LM_WITH_UCX
#include <arpa/inet.h>
#include <poll.h>
#include <algorithm>
#include <time.h>

#include "common.h"
#include "ucx_common.h"

namespace lm::ucx {

bool available() { return true; }

std::string version() {
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
}

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

lm_status fail_ucs(const std::string& what, ucs_status_t status) {
  return fail(LM_ERR_UNAVAILABLE, what + ": " + ucs_status_string(status));
}

int64_t request_payload_bytes(const RequestHeader& h) {
  if (h.rows < 0 || h.rows > kMaxRows || h.h_in <= 0 || h.n_out <= 0 || h.h_in > (1 << 20) || h.n_out > (1 << 20))
    return -1;
  if (h.n_adapters < 0 || h.n_adapters > static_cast<int32_t>(kMaxAdapters) || h.ids_bytes > kIdsBytes) return -1;
  if (h.moe != 0 && h.moe != 1) return -1;
  const int64_t rows = h.rows;
  return static_cast<int64_t>(h.ids_bytes) + rows * 4 + (h.moe ? rows * 4 : 0) + rows * h.h_in * 4;
}

lm_status create_worker(ucp_context_h* context, ucp_worker_h* worker, uint64_t extra_features) {
  ucp_config_t* config = nullptr;
  if (ucs_status_t s = ucp_config_read(nullptr, nullptr, &config); s != UCS_OK) return fail_ucs("UCX config", s);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP | extra_features;
  ucs_status_t s = ucp_init(&params, config, context);
  ucp_config_release(config);
  if (s != UCS_OK) return fail_ucs("UCX init", s);
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // each side drives its worker from one thread at a time
  if (s = ucp_worker_create(*context, &wp, worker); s != UCS_OK) {
    ucp_cleanup(*context);
    return fail_ucs("UCX worker", s);
  }
  return LM_OK;
}

void destroy_worker(ucp_context_h context, ucp_worker_h worker) {
  if (worker) ucp_worker_destroy(worker);
  if (context) ucp_cleanup(context);
}

void sleep_on_worker(ucp_worker_h worker, int extra_fd, int64_t timeout_ns) {
  // Arm first: UCS_ERR_BUSY means events are already pending, so do not sleep.
  if (ucp_worker_arm(worker) == UCS_ERR_BUSY) return;
  int efd = -1;
  if (ucp_worker_get_efd(worker, &efd) != UCS_OK) return;
  pollfd fds[2] = {{efd, POLLIN, 0}, {extra_fd, POLLIN, 0}};
  const int timeout_ms = static_cast<int>(std::max<int64_t>(1, timeout_ns / 1000000));
  poll(fds, extra_fd >= 0 ? 2 : 1, timeout_ms);
}

lm_status start_listener(ucp_worker_h worker, const sockaddr_in& addr, ucp_listener_conn_callback_t on_connect,
                         void* arg, const std::string& what, ucp_listener_h* listener, uint16_t* port, std::string* host) {
  ucp_listener_params_t lp{};
  lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  lp.sockaddr.addrlen = sizeof addr;
  lp.conn_handler.cb = on_connect;
  lp.conn_handler.arg = arg;
  if (ucs_status_t s = ucp_listener_create(worker, &lp, listener); s != UCS_OK) return fail_ucs(what, s);
  ucp_listener_attr_t attr{};
  attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  if (ucs_status_t s = ucp_listener_query(*listener, &attr); s != UCS_OK) return fail_ucs("UCX listener query", s);
  *port = ntohs(reinterpret_cast<const sockaddr_in*>(&attr.sockaddr)->sin_port);
  char text[INET_ADDRSTRLEN] = {0};
  inet_ntop(AF_INET, &addr.sin_addr, text, sizeof text);
  *host = text;
  return LM_OK;
}

ucp_ep_params_t client_endpoint_params(const sockaddr_in& addr, ucp_err_handler_cb_t on_error, void* arg) {
  ucp_ep_params_t ep{};
  ep.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                  UCP_EP_PARAM_FIELD_ERR_HANDLER;
  ep.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
  ep.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  ep.sockaddr.addrlen = sizeof addr;
  ep.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  ep.err_handler.cb = on_error;
  ep.err_handler.arg = arg;
  return ep;
}

void close_endpoints(ucp_worker_h worker, std::set<ucp_ep_h>& eps) {
  std::vector<ucs_status_ptr_t> closing;
  for (ucp_ep_h ep : eps) {
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    closing.push_back(ucp_ep_close_nbx(ep, &p));
  }
  for (ucs_status_ptr_t st : closing) wait_request(worker, st, 1'000'000'000);
  eps.clear();
}

ucs_status_t wait_request(ucp_worker_h worker, ucs_status_ptr_t request, int64_t timeout_ns) {
  if (request == nullptr) return UCS_OK;
  if (UCS_PTR_IS_ERR(request)) return UCS_PTR_STATUS(request);
  const int64_t deadline = now_ns() + timeout_ns;
  ucs_status_t s;
  while ((s = ucp_request_check_status(request)) == UCS_INPROGRESS && now_ns() < deadline) ucp_worker_progress(worker);
  if (s == UCS_INPROGRESS) ucp_request_cancel(worker, request);
  ucp_request_free(request);
  return s == UCS_INPROGRESS ? UCS_ERR_TIMED_OUT : s;
}

}  // namespace lm::ucx

#else

namespace lm::ucx {
bool available() { return false; }
std::string version() { return ""; }
}  // namespace lm::ucx

#endif
