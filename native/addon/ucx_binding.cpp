// Node-API binding of the UCX site transport (native/src/ucx_*.cpp).
//
// ucxInfo() → {available, version}. LoRA server: ucxServerStart(options) → External of the server
// (listener bound to options.bindHost, port from the OS); ucxServerAttach(server, workerId) →
// {host, port, key}; ucxServerSetTables (the same tables as the rings); ucxServerStats;
// ucxServerStop. Worker: ucxConnect(host, port, key, timeoutMs) → Promise of the
// Napi::External<std::shared_ptr<lm::SiteBackend>> the native step takes (and shmSite runs one
// site through); ucxCheck; ucxClose. Errors carry the core's status name as `code`.
#include "ucx_binding.h"

#include <memory>
#include <new>
#include <string>

#include "../src/ucx_rma.h"
#include "../src/ucx_site.h"
#include "shm_binding.h"
#include "status_name.h"

namespace {

using BackendPtr = std::shared_ptr<lm::SiteBackend>;
using ServerPtr = std::shared_ptr<lm::ucx::Server>;

Napi::Error error(Napi::Env env, lm_status s, const std::string& message) {
  Napi::Error e = Napi::Error::New(env, message);
  e.Set("code", Napi::String::New(env, lm::addon::status_name(s)));
  return e;
}

Napi::Value throw_error(Napi::Env env, lm_status s, const std::string& message) {
  error(env, s, message).ThrowAsJavaScriptException();
  return env.Undefined();
}

ServerPtr* server_of(const Napi::Value& v) {
  if (!v.IsExternal()) return nullptr;
  return v.As<Napi::External<ServerPtr>>().Data();
}

BackendPtr* backend_of(const Napi::Value& v) {
  if (!v.IsExternal()) return nullptr;
  return v.As<Napi::External<BackendPtr>>().Data();
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("available", Napi::Boolean::New(info.Env(), lm::ucx::available()));
  out.Set("version", lm::ucx::version());
  return out;
}

int32_t int_at(const Napi::Object& o, const char* key, bool* ok) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) *ok = false;
  return v.IsNumber() ? v.As<Napi::Number>().Int32Value() : 0;
}

Napi::Value ServerStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) return throw_error(env, LM_ERR_ARGUMENT, "ucxServerStart(options)");
  Napi::Object o = info[0].As<Napi::Object>();
  lm::ucx::ServerOptions opt;
  bool ok = true;
  opt.dims.n_layers = int_at(o, "numLayers", &ok);
  opt.dims.n_experts = int_at(o, "numExperts", &ok);
  Napi::Value h = o.Get("hIn"), n = o.Get("nOut"), host = o.Get("bindHost");
  if (!ok || !h.IsArray() || !n.IsArray() || h.As<Napi::Array>().Length() != 4 || n.As<Napi::Array>().Length() != 4 ||
      !host.IsString())
    return throw_error(env, LM_ERR_ARGUMENT, "ucxServerStart needs numLayers, numExperts, hIn[4], nOut[4], bindHost");
  for (uint32_t i = 0; i < 4; i++) {
    opt.dims.h_in[i] = h.As<Napi::Array>().Get(i).As<Napi::Number>().Int32Value();
    opt.dims.n_out[i] = n.As<Napi::Array>().Get(i).As<Napi::Number>().Int32Value();
  }
  opt.bind_host = host.As<Napi::String>().Utf8Value();
  ServerPtr server;
  if (lm_status s = lm::ucx::Server::start(opt, &server); s != LM_OK) return throw_error(env, s, lm_last_error());
  return Napi::External<ServerPtr>::New(env, new ServerPtr(std::move(server)), [](Napi::Env, ServerPtr* p) {
    (*p)->stop();
    delete p;
  });
}

Napi::Value ServerAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServerPtr* server = server_of(info[0]);
  if (!server || !info[1].IsString()) return throw_error(env, LM_ERR_ARGUMENT, "ucxServerAttach(server, workerId)");
  std::string host, key;
  uint16_t port = 0;
  if (lm_status s = (*server)->attach(info[1].As<Napi::String>().Utf8Value(), &host, &port, &key); s != LM_OK)
    return throw_error(env, s, lm_last_error());
  Napi::Object out = Napi::Object::New(env);
  out.Set("host", host);
  out.Set("port", Napi::Number::New(env, port));
  out.Set("key", key);
  return out;
}

Napi::Value ServerSetTables(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServerPtr* server = server_of(info[0]);
  if (!server) return throw_error(env, LM_ERR_ARGUMENT, "ucxServerSetTables(server, slots, sites)");
  std::string why;
  auto tables = tables_from_js(info[1], info[2], &why);
  if (!tables) return throw_error(env, LM_ERR_ARGUMENT, why);
  (*server)->set_tables(std::move(tables));
  return env.Undefined();
}

Napi::Value ServerStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ServerPtr* server = server_of(info[0]);
  if (!server) return throw_error(env, LM_ERR_ARGUMENT, "ucxServerStats(server)");
  const lm::ucx::ServerStats s = (*server)->stats();
  Napi::Object out = Napi::Object::New(env);
  out.Set("nativeCalls", Napi::Number::New(env, static_cast<double>(s.native_calls)));
  out.Set("workItems", Napi::Number::New(env, static_cast<double>(s.work_items)));
  out.Set("rows", Napi::Number::New(env, static_cast<double>(s.rows)));
  out.Set("connected", Napi::Number::New(env, static_cast<double>(s.connected)));
  out.Set("rejected", Napi::Number::New(env, static_cast<double>(s.rejected)));
  return out;
}

Napi::Value ServerStop(const Napi::CallbackInfo& info) {
  ServerPtr* server = server_of(info[0]);
  if (!server) return throw_error(info.Env(), LM_ERR_ARGUMENT, "ucxServerStop(server)");
  (*server)->stop();
  return info.Env().Undefined();
}

// Connecting waits for one round trip, so it runs off the JS thread.
class ConnectWorker : public Napi::AsyncWorker {
 public:
  ConnectWorker(Napi::Env env, std::string host, uint16_t port, std::string key, int64_t timeout_us)
      : Napi::AsyncWorker(env),
        deferred(Napi::Promise::Deferred::New(env)),
        host_(std::move(host)),
        key_(std::move(key)),
        port_(port),
        timeout_us_(timeout_us) {}
  Napi::Promise::Deferred deferred;

  void Execute() override {
    status_ = lm::ucx::connect(host_, port_, key_, timeout_us_, &backend_);
    if (status_ != LM_OK) message_ = lm_last_error();
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (status_ != LM_OK) {
      deferred.Reject(error(env, status_, message_).Value());
      return;
    }
    deferred.Resolve(Napi::External<BackendPtr>::New(env, new BackendPtr(std::move(backend_)),
                                                     [](Napi::Env, BackendPtr* p) { delete p; }));
  }
  void OnError(const Napi::Error& e) override { deferred.Reject(e.Value()); }

 private:
  std::string host_, key_;
  uint16_t port_;
  int64_t timeout_us_;
  lm_status status_ = LM_OK;
  std::string message_;
  BackendPtr backend_;
};

Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsNumber() || !info[2].IsString() || !info[3].IsNumber()) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(error(env, LM_ERR_ARGUMENT, "ucxConnect(host, port, key, timeoutMs)").Value());
    return d.Promise();
  }
  const double port = info[1].As<Napi::Number>().DoubleValue();
  if (port < 1 || port > 65535 || port != static_cast<double>(static_cast<int>(port))) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(error(env, LM_ERR_ARGUMENT, "UCX port must be 1..65535").Value());
    return d.Promise();
  }
  auto* w = new ConnectWorker(env, info[0].As<Napi::String>().Utf8Value(), static_cast<uint16_t>(port),
                              info[2].As<Napi::String>().Utf8Value(),
                              static_cast<int64_t>(info[3].As<Napi::Number>().DoubleValue() * 1000));
  Napi::Promise p = w->deferred.Promise();
  w->Queue();
  return p;
}

Napi::Value Check(const Napi::CallbackInfo& info) {
  BackendPtr* b = backend_of(info[0]);
  if (!b) return throw_error(info.Env(), LM_ERR_ARGUMENT, "ucxCheck(backend)");
  return Napi::Boolean::New(info.Env(), lm::ucx::backend_check(b->get()));
}

Napi::Value Close(const Napi::CallbackInfo& info) {
  BackendPtr* b = backend_of(info[0]);
  if (!b) return throw_error(info.Env(), LM_ERR_ARGUMENT, "ucxClose(backend)");
  lm::ucx::close_backend(b->get());
  return info.Env().Undefined();
}


using RegionServerPtr = std::shared_ptr<lm::ucx::RegionServer>;

RegionServerPtr* region_server_of(const Napi::Value& v) {
  if (!v.IsExternal()) return nullptr;
  return v.As<Napi::External<RegionServerPtr>>().Data();
}

Napi::Value RegionServerStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) return throw_error(env, LM_ERR_ARGUMENT, "ucxRegionServerStart(bindHost)");
  RegionServerPtr server;
  if (lm_status s = lm::ucx::RegionServer::start(info[0].As<Napi::String>().Utf8Value(), &server); s != LM_OK)
    return throw_error(env, s, lm_last_error());
  Napi::Object out = Napi::Object::New(env);
  out.Set("host", server->host());
  out.Set("port", Napi::Number::New(env, server->port()));
  out.Set("handle", Napi::External<RegionServerPtr>::New(env, new RegionServerPtr(std::move(server)),
                                                          [](Napi::Env, RegionServerPtr* p) {
                                                            (*p)->stop();
                                                            delete p;
                                                          }));
  return out;
}

Napi::Value RegionAdd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RegionServerPtr* server = region_server_of(info[0]);
  if (!server || !info[1].IsTypedArray()) return throw_error(env, LM_ERR_ARGUMENT, "ucxRegionAdd(server, bytes)");
  Napi::TypedArray a = info[1].As<Napi::TypedArray>();
  const auto* data = static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  lm::ucx::RegionOffer offer;
  if (lm_status s = (*server)->add(data, a.ByteLength(), &offer); s != LM_OK) return throw_error(env, s, lm_last_error());
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", Napi::Number::New(env, static_cast<double>(offer.id)));
  out.Set("address", Napi::Number::New(env, static_cast<double>(offer.address)));  // user space: < 2^53
  out.Set("length", Napi::Number::New(env, static_cast<double>(offer.length)));
  out.Set("rkey", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(offer.rkey.data()), offer.rkey.size()));
  return out;
}

Napi::Value RegionRemove(const Napi::CallbackInfo& info) {
  RegionServerPtr* server = region_server_of(info[0]);
  if (!server || !info[1].IsNumber()) return throw_error(info.Env(), LM_ERR_ARGUMENT, "ucxRegionRemove(server, id)");
  (*server)->remove(static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue()));
  return info.Env().Undefined();
}

Napi::Value RegionAllow(const Napi::CallbackInfo& info) {
  RegionServerPtr* server = region_server_of(info[0]);
  if (!server || !info[1].IsString() || !info[2].IsNumber())
    return throw_error(info.Env(), LM_ERR_ARGUMENT, "ucxRegionAllow(server, ipv4, ttlMs)");
  (*server)->allow(info[1].As<Napi::String>().Utf8Value(), static_cast<int64_t>(info[2].As<Napi::Number>().DoubleValue()));
  return info.Env().Undefined();
}

Napi::Value RegionStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RegionServerPtr* server = region_server_of(info[0]);
  if (!server) return throw_error(env, LM_ERR_ARGUMENT, "ucxRegionStats(server)");
  const lm::ucx::RegionStats s = (*server)->stats();
  Napi::Object out = Napi::Object::New(env);
  out.Set("regions", Napi::Number::New(env, static_cast<double>(s.regions)));
  out.Set("bytes", Napi::Number::New(env, static_cast<double>(s.bytes)));
  out.Set("accepted", Napi::Number::New(env, static_cast<double>(s.accepted)));
  out.Set("refused", Napi::Number::New(env, static_cast<double>(s.refused)));
  return out;
}

Napi::Value RegionServerStop(const Napi::CallbackInfo& info) {
  RegionServerPtr* server = region_server_of(info[0]);
  if (!server) return throw_error(info.Env(), LM_ERR_ARGUMENT, "ucxRegionServerStop(server)");
  (*server)->stop();
  return info.Env().Undefined();
}

// The get waits on the network, so it runs off the JS thread, into a buffer JavaScript then owns.
class GetWorker : public Napi::AsyncWorker {
 public:
  GetWorker(Napi::Env env, std::string host, uint16_t port, uint64_t address, std::string rkey, uint64_t length,
            int64_t timeout_us)
      : Napi::AsyncWorker(env),
        deferred(Napi::Promise::Deferred::New(env)),
        host_(std::move(host)),
        rkey_(std::move(rkey)),
        port_(port),
        address_(address),
        length_(length),
        timeout_us_(timeout_us) {}
  Napi::Promise::Deferred deferred;

  void Execute() override {
    bytes_ = new (std::nothrow) uint8_t[length_ == 0 ? 1 : length_];
    if (!bytes_) {
      status_ = LM_ERR_MEMORY;
      message_ = "cannot allocate " + std::to_string(length_) + " bytes for an RMA fetch";
      return;
    }
    status_ = lm::ucx::region_get(host_, port_, address_, rkey_, length_, bytes_, timeout_us_);
    if (status_ != LM_OK) message_ = lm_last_error();
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (status_ != LM_OK) {
      delete[] bytes_;
      deferred.Reject(error(env, status_, message_).Value());
      return;
    }
    deferred.Resolve(Napi::Buffer<uint8_t>::New(env, bytes_, length_, [](Napi::Env, uint8_t* p) { delete[] p; }));
  }
  void OnError(const Napi::Error& e) override {
    delete[] bytes_;
    deferred.Reject(e.Value());
  }

 private:
  std::string host_, rkey_;
  uint16_t port_;
  uint64_t address_, length_;
  int64_t timeout_us_;
  uint8_t* bytes_ = nullptr;
  lm_status status_ = LM_OK;
  std::string message_;
};

Napi::Value RegionGet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const bool ok = info[0].IsString() && info[1].IsNumber() && info[2].IsNumber() && info[3].IsBuffer() &&
                  info[4].IsNumber() && info[5].IsNumber();
  const double port = ok ? info[1].As<Napi::Number>().DoubleValue() : 0;
  const double length = ok ? info[4].As<Napi::Number>().DoubleValue() : -1;
  if (!ok || port < 1 || port > 65535 || length < 0 || length > 64.0 * (1ull << 30)) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(error(env, LM_ERR_ARGUMENT, "ucxRegionGet(host, port 1..65535, address, rkey, length ≤ 64 GiB, timeoutMs)").Value());
    return d.Promise();
  }
  Napi::Buffer<char> rkey = info[3].As<Napi::Buffer<char>>();
  auto* w = new GetWorker(env, info[0].As<Napi::String>().Utf8Value(), static_cast<uint16_t>(port),
                          static_cast<uint64_t>(info[2].As<Napi::Number>().DoubleValue()),
                          std::string(rkey.Data(), rkey.Length()), static_cast<uint64_t>(length),
                          static_cast<int64_t>(info[5].As<Napi::Number>().DoubleValue() * 1000));
  Napi::Promise p = w->deferred.Promise();
  w->Queue();
  return p;
}
}  // namespace

void register_ucx_binding(Napi::Env env, Napi::Object exports) {
  exports.Set("ucxInfo", Napi::Function::New(env, Info));
  exports.Set("ucxServerStart", Napi::Function::New(env, ServerStart));
  exports.Set("ucxServerAttach", Napi::Function::New(env, ServerAttach));
  exports.Set("ucxServerSetTables", Napi::Function::New(env, ServerSetTables));
  exports.Set("ucxServerStats", Napi::Function::New(env, ServerStats));
  exports.Set("ucxServerStop", Napi::Function::New(env, ServerStop));
  exports.Set("ucxConnect", Napi::Function::New(env, Connect));
  exports.Set("ucxCheck", Napi::Function::New(env, Check));
  exports.Set("ucxClose", Napi::Function::New(env, Close));
  exports.Set("ucxRegionServerStart", Napi::Function::New(env, RegionServerStart));
  exports.Set("ucxRegionAdd", Napi::Function::New(env, RegionAdd));
  exports.Set("ucxRegionRemove", Napi::Function::New(env, RegionRemove));
  exports.Set("ucxRegionAllow", Napi::Function::New(env, RegionAllow));
  exports.Set("ucxRegionStats", Napi::Function::New(env, RegionStats));
  exports.Set("ucxRegionServerStop", Napi::Function::New(env, RegionServerStop));
  exports.Set("ucxRegionGet", Napi::Function::New(env, RegionGet));
}
