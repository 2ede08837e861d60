// LoRA sites between hosts over UCX (issue 19): the cross-host counterpart of the shared-memory
// rings. The LoRA server runs a native thread with a UCP worker and a listener bound to the address
// it advertises (port chosen by the OS); a base worker gets the port and a per-worker session key
// through the gRPC AttachUcx call (cluster-token checked like every internal RPC), connects, and
// sends each site as one active message (header + rows); the server batches the requests of all
// connected workers per (layer, site), runs the shared batched kernel (site_compute.h) and replies
// with the delta as one active message. UCX picks the transport: TCP here, RDMA verbs (RoCE,
// InfiniBand) where the hardware exists (UCX_TLS, UCX_NET_DEVICES; docs/rdma.md).
//
// Built only when libucx-dev is found (LM_WITH_UCX); otherwise available() is false and every
// entry point fails with LM_ERR_UNAVAILABLE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "loramesh/core.h"
#include "site_backend.h"
#include "site_compute.h"

namespace lm::ucx {

// Whether this build links UCX.
bool available();

// The UCX version this build links ("" without UCX).
std::string version();

struct ServerOptions {
  ModelDims dims;
  std::string bind_host;  // the LoRA server's advertised host (an IPv4 address or a resolvable name)
};

struct ServerStats {
  uint64_t native_calls = 0, work_items = 0, rows = 0;
  uint64_t connected = 0;  // endpoints open now
  uint64_t rejected = 0;   // requests with an unknown session key or a malformed header
};

class Server {
 public:
  // Creates the UCP context, worker and listener, then starts the server thread.
  static lm_status start(const ServerOptions& options, std::shared_ptr<Server>* out);
  virtual ~Server() = default;
  // The listener's address and a fresh session key for one worker (16 random bytes, hex).
  virtual lm_status attach(const std::string& worker_id, std::string* host, uint16_t* port, std::string* key) = 0;
  virtual void set_tables(std::shared_ptr<const Tables> tables) = 0;
  virtual ServerStats stats() = 0;
  // Closes every endpoint (the workers' waits fail with LM_ERR_UNAVAILABLE) and joins the thread.
  virtual void stop() = 0;
};

// Connects to a LoRA server's listener and checks the session key with one round trip, waiting at
// most timeout_us. The backend's wait() returns LM_ERR_UNAVAILABLE when the server does not answer
// within the site timeout, the connection fails or the server closed it; LM_ERR_NOT_FOUND for an
// adapter the server does not hold.
lm_status connect(const std::string& host, uint16_t port, const std::string& key, int64_t timeout_us,
                  std::shared_ptr<SiteBackend>* out);
// Further posts fail; the connection goes with the last reference.
void close_backend(SiteBackend* backend);
// Whether the connection is usable (progresses it once, so a failed peer is noticed between sites).
bool backend_check(SiteBackend* backend);
// Whether `backend` is a UCX backend.
bool is_backend(SiteBackend* backend);

}  // namespace lm::ucx
