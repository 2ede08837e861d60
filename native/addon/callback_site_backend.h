// A SiteBackend that hands each LoRA site to JavaScript (issue 13): the step thread posts the site
// through a Napi::ThreadSafeFunction and, after the base projection, waits until the JavaScript
// function's promise settles. This keeps the existing TypeScript LoRA backends (the gRPC stream to
// LoRA servers, hybrid routing) working unchanged behind the native step.
#pragma once

#include <napi.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../src/site_backend.h"

namespace lm {

class CallbackSiteBackend : public SiteBackend {
 public:
  // `fn(request) => Promise<Float32Array>`; request = {layer, site, x, rows, inFeatures, outFeatures,
  // rowAdapter, rowExpert | null}; the promise resolves with the delta [rows × outFeatures].
  CallbackSiteBackend(Napi::Env env, Napi::Function fn);
  ~CallbackSiteBackend() override;

  lm_status begin_step(const char* const* adapter_ids, int32_t n) override;
  lm_status post(const SiteCall& call, uint64_t* ticket) override;
  lm_status wait(uint64_t ticket, int64_t timeout_us) override;
  void end_step() override;

  // One posted site, shared by the step thread and the JavaScript side.
  struct Pending {
    std::mutex mutex;
    std::condition_variable settled;
    bool done = false;
    bool cancelled = false;  // the step stopped waiting: JavaScript must not write the delta
    std::string error;       // empty when the delta was written
    SiteCall call{};
  };

 private:
  Napi::ThreadSafeFunction tsfn_;
  // Set when Node finalized the function (environment teardown): it must not be released again.
  std::shared_ptr<std::atomic<bool>> closed_ = std::make_shared<std::atomic<bool>>(false);
  std::vector<std::shared_ptr<Pending>> pending_;
};

}  // namespace lm
