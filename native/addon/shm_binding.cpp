// Node-API binding of the shared-memory rings (native/src/shm_*.cpp).
//
// LoRA server: shmServerStart → an External holding the ring server; shmServerAttach creates a
// worker's segment and returns its generated name; shmServerSetTables replaces the packed adapter
// weights the ring thread computes with (copied, so JS may drop or repack its own); shmServerStats.
// Worker: shmConnect(name) → Napi::External<std::shared_ptr<lm::SiteBackend>> (what the native step
// takes); shmSite runs one site (begin_step, post, wait) on a libuv worker thread and resolves with
// the delta, so today's JS forward pass uses the rings. Errors carry the core's status name as `code`.
#include "shm_binding.h"

#include <memory>
#include <string>
#include <vector>

#include "../src/priority.h"
#include "../src/shm_ring.h"
#include "status_name.h"

namespace {

using BackendPtr = std::shared_ptr<lm::SiteBackend>;
using ServerPtr = std::shared_ptr<lm::shm::Server>;

using lm::addon::status_name;

Napi::Error error(Napi::Env env, lm_status s, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, status_name(s)));
  return e;
}

struct Bad {
  std::string message;
};

double num(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw Bad{std::string(key) + " must be a number"};
  return v.As<Napi::Number>().DoubleValue();
}

int32_t int32(const Napi::Object& o, const char* key) {
  const double v = num(o, key);
  if (v != static_cast<double>(static_cast<int32_t>(v))) throw Bad{std::string(key) + " must be a 32-bit integer"};
  return static_cast<int32_t>(v);
}

template <typename T>
Napi::TypedArrayOf<T> typed(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != Napi::TypedArrayOf<T>(v.Env(), 0).TypedArrayType())
    throw Bad{std::string(key) + " has the wrong array type"};
  return v.As<Napi::TypedArrayOf<T>>();
}

template <typename T>
T& external(const Napi::Value& v, const char* what) {
  if (!v.IsExternal()) throw Bad{std::string(what) + " must be a handle from the ring binding"};
  return *v.As<Napi::External<T>>().Data();
}

// Runs `body` and turns a Bad into a thrown JS error with code LM_ERR_ARGUMENT.
template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, F body) {
  try {
    return body();
  } catch (const Bad& b) {
    error(info.Env(), LM_ERR_ARGUMENT, b.message).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
}

Napi::Value ServerStart(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsObject()) throw Bad{"shmServerStart(options)"};
    Napi::Object o = info[0].As<Napi::Object>();
    lm::shm::ServerOptions opt;
    opt.n_layers = int32(o, "numLayers");
    opt.n_experts = int32(o, "numExperts");
    Napi::Value h = o.Get("hIn"), n = o.Get("nOut");
    if (!h.IsArray() || !n.IsArray() || h.As<Napi::Array>().Length() != 4 || n.As<Napi::Array>().Length() != 4)
      throw Bad{"hIn and nOut must list the four sites"};
    for (uint32_t i = 0; i < 4; i++) {
      opt.h_in[i] = h.As<Napi::Array>().Get(i).As<Napi::Number>().Int32Value();
      opt.n_out[i] = n.As<Napi::Array>().Get(i).As<Napi::Number>().Int32Value();
    }
    opt.segment_bytes = static_cast<size_t>(num(o, "segmentBytes"));
    opt.window_us = static_cast<int64_t>(num(o, "windowUs"));
    opt.active_us = static_cast<int64_t>(num(o, "activeUs"));
    opt.site_timeout_us = static_cast<int64_t>(num(o, "siteTimeoutMs") * 1000);
    opt.attach_timeout_us = static_cast<int64_t>(num(o, "attachTimeoutMs") * 1000);
    auto* server = new ServerPtr(lm::shm::Server::start(opt));
    return Napi::External<ServerPtr>::New(info.Env(), server, [](Napi::Env, ServerPtr* p) {
      (*p)->stop();
      delete p;
    });
  });
}

Napi::Value ServerAttach(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    ServerPtr& server = external<ServerPtr>(info[0], "server");
    if (!info[1].IsString()) throw Bad{"workerId must be a string"};
    std::string name;
    uint64_t bytes = 0;
    if (lm_status s = server->attach(info[1].As<Napi::String>().Utf8Value(), &name, &bytes); s != LM_OK) {
      error(info.Env(), s, lm_last_error()).ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("name", name);
    out.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(bytes)));
    return out;
  });
}

template <typename T>
std::vector<T> copy(const Napi::TypedArrayOf<T>& a) {
  return std::vector<T>(a.Data(), a.Data() + a.ElementLength());
}

lm::SiteWeights site_weights(const Napi::Object& s) {
  lm::SiteWeights w;
  const std::string dtype = s.Get("dtype").ToString().Utf8Value();
  if (dtype != "f32" && dtype != "bf16") throw Bad{"weights must be f32 or bf16"};
  w.dtype = dtype == "f32" ? LM_F32 : LM_BF16;
  for (const char* key : {"aPool", "bPool"}) {
    Napi::Value v = s.Get(key);
    if (!v.IsTypedArray()) throw Bad{std::string(key) + " must be a typed array"};
    Napi::TypedArray t = v.As<Napi::TypedArray>();
    const uint8_t* p = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
    (key[0] == 'a' ? w.a_pool : w.b_pool).assign(p, p + t.ByteLength());
  }
  w.n_keys = int32(s, "nKeys");
  w.max_rank = int32(s, "maxRank");
  Napi::Value widths = s.Get("sliceWidths");
  if (!widths.IsArray() || widths.As<Napi::Array>().Length() < 1 || widths.As<Napi::Array>().Length() > LM_LORA_MAX_SLICES)
    throw Bad{"sliceWidths must list 1..4 widths"};
  w.n_slices = static_cast<int32_t>(widths.As<Napi::Array>().Length());
  for (int32_t i = 0; i < w.n_slices; i++) w.widths[i] = widths.As<Napi::Array>().Get(i).As<Napi::Number>().Int32Value();
  w.rank = copy(typed<int32_t>(s, "rank"));
  w.scale = copy(typed<float>(s, "scale"));
  w.a_offset = copy(typed<int64_t>(s, "aOffset"));
  w.b_offset = copy(typed<int64_t>(s, "bOffset"));
  const size_t entries = static_cast<size_t>(w.n_keys) * w.n_slices;
  if (w.rank.size() != entries || w.scale.size() != entries || w.a_offset.size() != entries || w.b_offset.size() != entries)
    throw Bad{"offset tables must have nKeys × slices entries"};
  lm::transpose_b(&w);
  return w;
}

std::shared_ptr<lm::Tables> parse_tables(const Napi::Value& slots_value, const Napi::Value& sites_value) {
  if (!slots_value.IsArray() || !sites_value.IsArray()) throw Bad{"slots and sites must be arrays"};
  auto tables = std::make_shared<lm::Tables>();
  Napi::Array slots = slots_value.As<Napi::Array>(), sites = sites_value.As<Napi::Array>();
  for (uint32_t i = 0; i < slots.Length(); i++) {
    const std::string id = slots.Get(i).ToString().Utf8Value();
    tables->slot_of[id] = static_cast<int32_t>(i);
    tables->slot_names.push_back(id);
  }
  for (uint32_t i = 0; i < sites.Length(); i++) {
    Napi::Object s = sites.Get(i).As<Napi::Object>();
    const int32_t layer = int32(s, "layer"), site = int32(s, "site"), moe = s.Get("moe").ToBoolean() ? 1 : 0;
    if (site < 0 || site > 3 || layer < 0) throw Bad{"bad layer or site"};
    tables->sites[lm::site_key(layer, site, moe)] = site_weights(s);
  }
  return tables;
}

// shmServerSetTables(server, slots: string[], sites: {layer, site, moe, dtype, aPool, ...}[])
Napi::Value ServerSetTables(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    ServerPtr& server = external<ServerPtr>(info[0], "server");
    server->set_tables(parse_tables(info[1], info[2]));
    return info.Env().Undefined();
  });
}

Napi::Value ServerStats(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    const lm::shm::ServerStats s = external<ServerPtr>(info[0], "server")->stats();
    Napi::Env env = info.Env();
    Napi::Object out = Napi::Object::New(env);
    out.Set("nativeCalls", Napi::Number::New(env, static_cast<double>(s.native_calls)));
    out.Set("workItems", Napi::Number::New(env, static_cast<double>(s.work_items)));
    out.Set("rows", Napi::Number::New(env, static_cast<double>(s.rows)));
    out.Set("attached", Napi::Number::New(env, static_cast<double>(s.attached)));
    out.Set("detached", Napi::Number::New(env, static_cast<double>(s.detached)));
    Napi::Array list = Napi::Array::New(env, s.detached_workers.size());
    for (size_t i = 0; i < s.detached_workers.size(); i++) list.Set(static_cast<uint32_t>(i), s.detached_workers[i]);
    out.Set("detachedWorkers", list);
    Napi::Object rows = Napi::Object::New(env);
    for (const auto& [id, n] : s.adapter_rows) rows.Set(id, Napi::Number::New(env, static_cast<double>(n)));
    out.Set("adapterRows", rows);
    // What the ring thread was doing when each new post arrived (lm::shm::PostFound).
    static const char* const kFound[lm::shm::kFoundKinds] = {"busy",          "expectSpin", "timedNap", "contended",
                                                             "noExpectation", "idle",       "late"};
    Napi::Object found = Napi::Object::New(env);
    for (int k = 0; k < lm::shm::kFoundKinds; k++)
      found.Set(kFound[k], Napi::Number::New(env, static_cast<double>(s.posts_found[k])));
    out.Set("postsFound", found);
    out.Set("preemptedSpins", Napi::Number::New(env, static_cast<double>(s.preempted_spins)));
    return out;
  });
}

Napi::Value ServerStop(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    external<ServerPtr>(info[0], "server")->stop();
    return info.Env().Undefined();
  });
}

Napi::Value Connect(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    if (!info[0].IsString()) throw Bad{"shmConnect(name)"};
    BackendPtr backend;
    if (lm_status s = lm::shm::connect(info[0].As<Napi::String>().Utf8Value(), &backend); s != LM_OK) {
      error(info.Env(), s, lm_last_error()).ThrowAsJavaScriptException();
      return info.Env().Undefined();
    }
    // Exactly what the native step accepts: an External of a shared SiteBackend.
    return Napi::External<BackendPtr>::New(info.Env(), new BackendPtr(std::move(backend)),
                                           [](Napi::Env, BackendPtr* p) { delete p; });
  });
}

Napi::Value Fits(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    BackendPtr& b = external<BackendPtr>(info[0], "backend");
    const auto at = [&](size_t i) { return info[i].IsNumber() ? info[i].As<Napi::Number>().Int64Value() : -1; };
    return Napi::Boolean::New(info.Env(), lm::shm::backend_fits(b.get(), at(1), at(2), at(3)));
  });
}

Napi::Value Check(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), lm::shm::backend_check(external<BackendPtr>(info[0], "backend").get()));
  });
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  return guarded(info, [&]() -> Napi::Value {
    lm::shm::close_backend(external<BackendPtr>(info[0], "backend").get());
    return info.Env().Undefined();
  });
}

Napi::Value Reap(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), lm::shm::reap_dead_segments());
}

// One site through any SiteBackend, off the JS thread.
class SiteWorker : public Napi::AsyncWorker {
 public:
  SiteWorker(Napi::Env env, BackendPtr backend)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), backend_(std::move(backend)) {}

  Napi::Promise::Deferred deferred_;
  BackendPtr backend_;
  std::vector<std::string> ids;
  std::vector<int32_t> row_adapter, row_expert;
  std::vector<float> x, delta;
  lm::SiteCall call{};
  int64_t timeout_us = 0;

  void Execute() override {
    const lm::priority::Scope raised(call.rows <= lm::priority::rt_rows());  // a ring waiter, like the step thread
    std::vector<const char*> names;
    for (const auto& id : ids) names.push_back(id.c_str());
    call.x = x.data();
    call.row_adapter = row_adapter.data();
    call.row_expert = row_expert.empty() ? nullptr : row_expert.data();
    call.delta = delta.data();
    uint64_t ticket = 0;
    status_ = backend_->begin_step(names.data(), static_cast<int32_t>(names.size()));
    if (status_ == LM_OK) status_ = backend_->post(call, &ticket);
    if (status_ == LM_OK) status_ = backend_->wait(ticket, timeout_us);
    backend_->end_step();
    if (status_ != LM_OK) message_ = lm_last_error();
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (status_ != LM_OK) {
      deferred_.Reject(error(env, status_, message_).Value());
      return;
    }
    Napi::Float32Array out = Napi::Float32Array::New(env, delta.size());
    std::copy(delta.begin(), delta.end(), out.Data());
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  lm_status status_ = LM_OK;
  std::string message_;
};

// shmSite(backend, {layer, site, adapterIds, rowAdapter: Int32Array, rowExpert?: Int32Array, x: Float32Array,
//                   rows, hIn, nOut, timeoutMs}) → Promise<Float32Array> [rows, nOut]
Napi::Value Site(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto deferredError = [&](lm_status s, const std::string& m) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(error(env, s, m).Value());
    return d.Promise();
  };
  try {
    BackendPtr& backend = external<BackendPtr>(info[0], "backend");
    if (!info[1].IsObject()) throw Bad{"shmSite(backend, site)"};
    Napi::Object o = info[1].As<Napi::Object>();
    auto* w = new SiteWorker(env, backend);
    std::unique_ptr<SiteWorker> guard(w);
    w->call.layer = int32(o, "layer");
    w->call.site = static_cast<lm::SiteId>(int32(o, "site"));
    w->call.rows = int32(o, "rows");
    w->call.in_features = int32(o, "hIn");
    w->call.out_features = int32(o, "nOut");
    w->timeout_us = static_cast<int64_t>(num(o, "timeoutMs") * 1000);
    Napi::Value ids = o.Get("adapterIds");
    if (!ids.IsArray()) throw Bad{"adapterIds must be an array"};
    for (uint32_t i = 0; i < ids.As<Napi::Array>().Length(); i++) w->ids.push_back(ids.As<Napi::Array>().Get(i).ToString().Utf8Value());
    w->row_adapter = copy(typed<int32_t>(o, "rowAdapter"));
    if (!o.Get("rowExpert").IsUndefined() && !o.Get("rowExpert").IsNull()) w->row_expert = copy(typed<int32_t>(o, "rowExpert"));
    w->x = copy(typed<float>(o, "x"));
    const int64_t rows = w->call.rows;
    if (rows < 0 || w->call.in_features <= 0 || w->call.out_features <= 0 ||
        static_cast<int64_t>(w->row_adapter.size()) != rows ||
        (!w->row_expert.empty() && static_cast<int64_t>(w->row_expert.size()) != rows) ||
        static_cast<int64_t>(w->x.size()) != rows * w->call.in_features)
      return deferredError(LM_ERR_SHAPE, "site arrays do not match rows × widths");
    w->delta.assign(static_cast<size_t>(rows * w->call.out_features), 0.0f);
    Napi::Promise p = w->deferred_.Promise();
    guard.release()->Queue();
    return p;
  } catch (const Bad& b) {
    return deferredError(LM_ERR_ARGUMENT, b.message);
  }
}

}  // namespace

std::shared_ptr<lm::Tables> tables_from_js(const Napi::Value& slots, const Napi::Value& sites, std::string* error) {
  try {
    return parse_tables(slots, sites);
  } catch (const Bad& b) {
    *error = b.message;
    return nullptr;
  }
}

void register_shm_binding(Napi::Env env, Napi::Object exports) {
  exports.Set("shmServerStart", Napi::Function::New(env, ServerStart));
  exports.Set("shmServerAttach", Napi::Function::New(env, ServerAttach));
  exports.Set("shmServerSetTables", Napi::Function::New(env, ServerSetTables));
  exports.Set("shmServerStats", Napi::Function::New(env, ServerStats));
  exports.Set("shmServerStop", Napi::Function::New(env, ServerStop));
  exports.Set("shmConnect", Napi::Function::New(env, Connect));
  exports.Set("shmFits", Napi::Function::New(env, Fits));
  exports.Set("shmClose", Napi::Function::New(env, Close));
  exports.Set("shmCheck", Napi::Function::New(env, Check));
  exports.Set("shmReap", Napi::Function::New(env, Reap));
  exports.Set("shmSite", Napi::Function::New(env, Site));
}
