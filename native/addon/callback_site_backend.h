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

  // A backend kept across steps (one per LoRA backend, not one per step): JavaScript names the
  // step it is about to run, and each request carries the name of the step that posted it, so a
  // late site of an earlier step (its promise settles after that step gave up on it) is told apart
  // from the current step's and cannot use the current step's adapters or error slot. Set on the
  // JS thread before the step is queued; begin_step reads it on the step's thread.
  void arm(uint64_t step) { armed_.store(step, std::memory_order_release); }

  // One posted site, shared by the step thread and the JavaScript side.
  struct Pending {
    std::mutex mutex;
    std::condition_variable settled;
    bool done = false;
    bool cancelled = false;  // the step stopped waiting: JavaScript must not write the delta
    std::string error;       // empty when the delta was written
    SiteCall call{};
    uint64_t step = 0;       // arm()'s value when the step began
  };

 private:
  Napi::ThreadSafeFunction tsfn_;
  // Set when Node finalized the function (environment teardown): it must not be released again.
  std::shared_ptr<std::atomic<bool>> closed_ = std::make_shared<std::atomic<bool>>(false);
  std::vector<std::shared_ptr<Pending>> pending_;
  std::atomic<uint64_t> armed_{0};
  uint64_t step_ = 0;  // step thread: arm()'s value at begin_step
};

}  // namespace lm
