#include "callback_site_backend.h"

#include <chrono>
#include <cstring>

#include "../src/common.h"

namespace lm {

namespace {

using Pending = CallbackSiteBackend::Pending;

void settle(const std::shared_ptr<Pending>& p, const std::string& error, const Napi::Value* delta) {
  std::lock_guard<std::mutex> lock(p->mutex);
  if (p->done) return;
  if (!p->cancelled && error.empty() && delta != nullptr) {
    const size_t n = static_cast<size_t>(p->call.rows * p->call.out_features);
    bool ok = delta->IsTypedArray() && delta->As<Napi::TypedArray>().TypedArrayType() == napi_float32_array;
    if (ok) {
      Napi::Float32Array d = delta->As<Napi::Float32Array>();
      ok = d.ElementLength() == n;
      if (ok) std::memcpy(p->call.delta, d.Data(), n * sizeof(float));
    }
    if (!ok) p->error = "the LoRA backend returned a delta that is not a Float32Array of rows × out_features";
  } else if (!error.empty()) {
    p->error = error;
  }
  p->done = true;
  p->settled.notify_all();
}

// Runs on the JavaScript thread: calls fn(request) and settles the site when its promise does.
void call_js(Napi::Env env, Napi::Function fn, std::shared_ptr<Pending>* data) {
  std::shared_ptr<Pending> p = std::move(*data);
  delete data;
  if (env == nullptr) return settle(p, "the JavaScript environment is shutting down", nullptr);
  {
    // The step already stopped waiting for this site (it failed or timed out): no JavaScript for it.
    std::lock_guard<std::mutex> lock(p->mutex);
    if (p->cancelled) {
      p->done = true;
      p->error = "the step no longer waits for this LoRA site";
      p->settled.notify_all();
      return;
    }
  }
  const SiteCall& c = p->call;
  try {
    Napi::Object req = Napi::Object::New(env);
    req.Set("step", static_cast<double>(p->step));
    req.Set("layer", c.layer);
    req.Set("site", static_cast<int32_t>(c.site));
    req.Set("rows", static_cast<double>(c.rows));
    req.Set("inFeatures", static_cast<double>(c.in_features));
    req.Set("outFeatures", static_cast<double>(c.out_features));
    // Copies: the step's buffers are only valid until its wait() returns.
    Napi::Float32Array x = Napi::Float32Array::New(env, static_cast<size_t>(c.rows * c.in_features));
    std::memcpy(x.Data(), c.x, x.ByteLength());
    req.Set("x", x);
    Napi::Int32Array ra = Napi::Int32Array::New(env, static_cast<size_t>(c.rows));
    std::memcpy(ra.Data(), c.row_adapter, ra.ByteLength());
    req.Set("rowAdapter", ra);
    if (c.row_expert != nullptr) {
      Napi::Int32Array re = Napi::Int32Array::New(env, static_cast<size_t>(c.rows));
      std::memcpy(re.Data(), c.row_expert, re.ByteLength());
      req.Set("rowExpert", re);
    } else {
      req.Set("rowExpert", env.Null());
    }
    Napi::Value result = fn.Call({req});
    if (!result.IsPromise()) return settle(p, "the LoRA site callback did not return a promise", nullptr);
    Napi::Object promise = result.As<Napi::Object>();
    Napi::Function on_ok = Napi::Function::New(env, [p](const Napi::CallbackInfo& info) {
      Napi::Value v = info[0];
      settle(p, "", &v);
    });
    Napi::Function on_err = Napi::Function::New(env, [p](const Napi::CallbackInfo& info) {
      std::string message = "the LoRA site failed";
      if (info[0].IsObject()) {
        Napi::Value m = info[0].As<Napi::Object>().Get("message");
        if (m.IsString()) message = m.As<Napi::String>().Utf8Value();
      }
      settle(p, message.empty() ? "the LoRA site failed" : message, nullptr);
    });
    promise.Get("then").As<Napi::Function>().Call(promise, {on_ok, on_err});
  } catch (const Napi::Error& e) {
    settle(p, e.Message().empty() ? "the LoRA site callback threw" : e.Message(), nullptr);
  }
}


}  // namespace

CallbackSiteBackend::CallbackSiteBackend(Napi::Env env, Napi::Function fn) {
  std::shared_ptr<std::atomic<bool>> closed = closed_;
  tsfn_ = Napi::ThreadSafeFunction::New(env, fn, "loramesh.step.site", 0, 1, [closed](Napi::Env) { *closed = true; });
  tsfn_.Unref(env);  // a backend waiting for steps must not keep the process alive
}

CallbackSiteBackend::~CallbackSiteBackend() {
  if (!*closed_) tsfn_.Release();
}

lm_status CallbackSiteBackend::begin_step(const char* const*, int32_t) {
  pending_.clear();
  step_ = armed_.load(std::memory_order_acquire);
  return LM_OK;
}

lm_status CallbackSiteBackend::post(const SiteCall& call, uint64_t* ticket) {
  auto p = std::make_shared<Pending>();
  p->call = call;
  p->step = step_;
  auto* data = new std::shared_ptr<Pending>(p);
  const napi_status s = tsfn_.NonBlockingCall(data, [](Napi::Env env, Napi::Function fn, std::shared_ptr<Pending>* d) {
    call_js(env, fn, d);
  });
  if (s != napi_ok) {
    delete data;
    return fail(LM_ERR_DEVICE, "cannot hand the LoRA site to JavaScript (the environment is closing)");
  }
  *ticket = pending_.size();
  pending_.push_back(std::move(p));
  return LM_OK;
}

lm_status CallbackSiteBackend::wait(uint64_t ticket, int64_t timeout_us) {
  if (ticket >= pending_.size()) return fail(LM_ERR_ARGUMENT, "callback LoRA backend: unknown ticket");
  Pending& p = *pending_[ticket];
  std::unique_lock<std::mutex> lock(p.mutex);
  const auto done = [&] { return p.done; };
  if (timeout_us > 0) {
    if (!p.settled.wait_for(lock, std::chrono::microseconds(timeout_us), done)) {
      p.cancelled = true;
      return fail(LM_ERR_DEVICE, "LoRA site (layer " + std::to_string(p.call.layer) + ") got no answer within " +
                                     std::to_string(timeout_us / 1000) + " ms");
    }
  } else {
    p.settled.wait(lock, done);
  }
  if (!p.error.empty()) return fail(LM_ERR_DEVICE, p.error);
  return LM_OK;
}

void CallbackSiteBackend::end_step() {
  for (auto& p : pending_) {
    std::lock_guard<std::mutex> lock(p->mutex);
    p->cancelled = true;
  }
  pending_.clear();
}

}  // namespace lm
