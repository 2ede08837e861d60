// Peer adapter fetch over UCX RMA (issue 19). The holder copies an adapter's files into one region,
// registers it with UCX (ucp_mem_map) and hands out the region's address and packed rkey over its
// gRPC API (cluster-token checked); the fetcher connects to the holder's RMA listener and reads the
// region with one ucp_get_nbx. On RDMA verbs the NIC serves the read (the rkey is the capability);
// on TCP, UCX emulates the get with active messages served by the holder's progress thread.
//
// The listener accepts a connection only from an IP address the holder was told to expect (the
// gRPC offer names the caller's address), so the RMA path is no wider than the cluster token.
// Regions are freed only by remove() or stop(): the caller keeps a region for longer than any
// fetcher's get may take (a get of a freed region would read freed memory on TCP).
//
// Built only with UCX (LM_WITH_UCX); otherwise start() and get() fail with LM_ERR_UNAVAILABLE.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "loramesh/core.h"

namespace lm::ucx {

struct RegionOffer {
  uint64_t id = 0;
  uint64_t address = 0;  // the region's address in the holder's process
  uint64_t length = 0;
  std::string rkey;  // ucp_rkey_pack bytes
};

struct RegionStats {
  uint64_t regions = 0, bytes = 0;  // registered now
  uint64_t accepted = 0, refused = 0;  // connections, by the allow list
};

class RegionServer {
 public:
  // Creates a UCP context with RMA, a worker and a listener on bind_host (port from the OS), and
  // starts the thread that progresses it.
  static lm_status start(const std::string& bind_host, std::shared_ptr<RegionServer>* out);
  virtual ~RegionServer() = default;
  virtual std::string host() const = 0;
  virtual uint16_t port() const = 0;
  // Copies `n` bytes into a new registered region.
  virtual lm_status add(const uint8_t* data, uint64_t n, RegionOffer* out) = 0;
  // Unregisters and frees a region (unknown ids are ignored).
  virtual void remove(uint64_t id) = 0;
  // Accepts connections from `ipv4` for the next ttl_ms (extends an earlier allowance).
  virtual void allow(const std::string& ipv4, int64_t ttl_ms) = 0;
  virtual RegionStats stats() = 0;
  virtual void stop() = 0;
};

// Connects to a RegionServer at host:port, reads `length` bytes at `address` with the packed rkey
// into `dst`, and disconnects; at most timeout_us in all. LM_ERR_UNAVAILABLE on any failure.
lm_status region_get(const std::string& host, uint16_t port, uint64_t address, const std::string& rkey,
                     uint64_t length, uint8_t* dst, int64_t timeout_us);

}  // namespace lm::ucx
