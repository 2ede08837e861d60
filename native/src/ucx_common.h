// Pieces both ends of the UCX site transport share (ucx_site.h): the wire format of the two
// active messages, context and worker creation, and sleeping on a worker's event fd.
#pragma once

#ifdef LM_WITH_UCX
#include <netinet/in.h>
#include <ucp/api/ucp.h>

#include <cstdint>
#include <string>
#include <set>

#include "loramesh/core.h"

namespace lm::ucx {

constexpr uint32_t kMagic = 0x4c4d5531;  // "LMU1"
constexpr unsigned kRequestAm = 11;      // worker → server
constexpr unsigned kReplyAm = 12;        // server → worker
constexpr uint32_t kKeyBytes = 16;
constexpr uint32_t kMaxAdapters = 256;
constexpr uint32_t kIdsBytes = 16 * 1024;
constexpr uint32_t kMessageBytes = 200;
constexpr int64_t kMaxRows = 1 << 20;

enum Op : uint32_t { kOpSite = 1, kOpHello = 2 };

// AM header of a request. Payload: ids [ids_bytes] | row_adapter i32[rows] | row_expert i32[rows]
// (moe only) | x f32[rows * h_in]; the server checks the payload length against the header.
struct RequestHeader {
  uint32_t magic;
  uint32_t op;
  uint8_t key[kKeyBytes];
  uint64_t ticket;
  int32_t layer, site, rows, h_in, n_out, n_adapters, moe;
  uint32_t ids_bytes;
};

// AM header of a reply. Payload: delta f32[rows * n_out] when status is LM_OK.
struct ReplyHeader {
  uint32_t magic;
  int32_t status;
  uint64_t ticket;
  int32_t rows, n_out;
  char message[kMessageBytes];
};

// Byte size of a request's payload, or -1 when the header's counts are out of range.
int64_t request_payload_bytes(const RequestHeader& h);

// A UCP context with active messages and wakeup (plus `extra_features`, e.g. UCP_FEATURE_RMA), and
// one worker on it.
lm_status create_worker(ucp_context_h* context, ucp_worker_h* worker, uint64_t extra_features = 0);
void destroy_worker(ucp_context_h context, ucp_worker_h worker);

// Sleeps until the worker has events, `extra_fd` (if >= 0) is readable, or timeout_ns passes.
void sleep_on_worker(ucp_worker_h worker, int extra_fd, int64_t timeout_ns);

// Waits for a non-blocking UCP operation by progressing the worker (bounded by timeout_ns).
ucs_status_t wait_request(ucp_worker_h worker, ucs_status_ptr_t request, int64_t timeout_ns);

// Listens on `addr` (port 0: the OS picks one) and reports the bound port and the address as text.
lm_status start_listener(ucp_worker_h worker, const sockaddr_in& addr, ucp_listener_conn_callback_t on_connect,
                         void* arg, const std::string& what, ucp_listener_h* listener, uint16_t* port, std::string* host);

// Parameters of a client endpoint to `addr` with peer error handling through `on_error`.
ucp_ep_params_t client_endpoint_params(const sockaddr_in& addr, ucp_err_handler_cb_t on_error, void* arg);

// Force-closes every endpoint (waiting up to 1 s each), then clears the list.
void close_endpoints(ucp_worker_h worker, std::set<ucp_ep_h>& eps);

lm_status fail_ucs(const std::string& what, ucs_status_t status);

int64_t now_ns();

}  // namespace lm::ucx
#endif
