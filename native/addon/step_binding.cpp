// Node binding of the native step (issue 13): a model handle built once from the JS Model and KV
// cache, SiteBackends as Napi::External<std::shared_ptr<lm::SiteBackend>> (local kernels, a
// JavaScript callback, or any backend another binding hands over), and `step`, which runs a whole
// forward pass in one Napi::AsyncWorker. Rejections carry `code` (the core's status name) and
// `phase` ("op", "begin_step" or "site").
#include <napi.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../src/local_site_backend.h"
#include "../src/priority.h"
#include "../src/routed_site_backend.h"
#include "../src/shm_ring.h"
#include "../src/step.h"
#include "../src/threads.h"
#include "callback_site_backend.h"
#include "status_name.h"

namespace lm {

namespace {

using BackendPtr = std::shared_ptr<SiteBackend>;

using lm::addon::status_name;

const char* phase_name(StepPhase p) {
  switch (p) {
    case StepPhase::kBeginStep: return "begin_step";
    case StepPhase::kSite: return "site";
    default: return "op";
  }
}

struct ArgError {
  lm_status status;
  std::string message;
};

Napi::Error make_error(Napi::Env env, lm_status status, const std::string& message, StepPhase phase) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, status_name(status)));
  err.Set("phase", Napi::String::New(env, phase_name(phase)));
  return err;
}

// Reads typed arrays and tensors, keeping a reference to every array it hands out a pointer to.
struct Reader {
  std::vector<Napi::ObjectReference>* keep;

  Napi::TypedArray array(Napi::Value v, napi_typedarray_type type, const std::string& name) {
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
      throw ArgError{LM_ERR_DTYPE, name + " must be a " +
                                       (type == napi_int32_array ? "Int32Array" : type == napi_float32_array ? "Float32Array" : "typed array")};
    }
    Napi::TypedArray a = v.As<Napi::TypedArray>();
    keep->push_back(Napi::Persistent(a.As<Napi::Object>()));
    return a;
  }

  template <typename T>
  const T* data(Napi::Value v, napi_typedarray_type type, const std::string& name, size_t expected) {
    Napi::TypedArray a = array(v, type, name);
    if (a.ElementLength() != expected) {
      throw ArgError{LM_ERR_SHAPE, name + " must have " + std::to_string(expected) + " entries, got " + std::to_string(a.ElementLength())};
    }
    return reinterpret_cast<const T*>(static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  }

  lm_tensor tensor(Napi::Value v, const std::string& name, std::initializer_list<int64_t> shape) {
    if (!v.IsObject()) throw ArgError{LM_ERR_ARGUMENT, name + " must be a tensor"};
    Napi::Object o = v.As<Napi::Object>();
    Napi::Value dtype_v = o.Get("dtype");
    const std::string dtype = dtype_v.IsString() ? dtype_v.As<Napi::String>().Utf8Value() : "";
    lm_tensor t{};
    napi_typedarray_type type;
    if (dtype == "f32") t.dtype = LM_F32, type = napi_float32_array;
    else if (dtype == "bf16") t.dtype = LM_BF16, type = napi_uint16_array;
    else throw ArgError{LM_ERR_DTYPE, name + ": weights must be f32 or bf16"};
    size_t count = 1;
    for (int64_t d : shape) count *= static_cast<size_t>(d);
    Napi::TypedArray a = array(o.Get("data"), type, name);
    if (a.ElementLength() != count) {
      throw ArgError{LM_ERR_SHAPE, name + " must hold " + std::to_string(count) + " elements, got " + std::to_string(a.ElementLength())};
    }
    t.data = static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
    t.device = LM_CPU;
    t.ndim = static_cast<int32_t>(shape.size());
    int i = 0;
    for (int64_t d : shape) t.shape[i++] = d;
    return t;
  }
};

int64_t int_field(Napi::Object o, const char* key, int64_t lo, int64_t hi) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw ArgError{LM_ERR_ARGUMENT, std::string(key) + " must be a number"};
  const double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
    throw ArgError{LM_ERR_ARGUMENT, std::string(key) + " must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]"};
  }
  return static_cast<int64_t>(d);
}

double num_field(Napi::Object o, const char* key) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw ArgError{LM_ERR_ARGUMENT, std::string(key) + " must be a number"};
  return v.As<Napi::Number>().DoubleValue();
}

// The model handle: the StepModel and references keeping its weights and KV cache alive. Steps on
// one handle run one at a time (they share the KV cache).
struct ModelHandle {
  StepModel model;
  std::vector<Napi::ObjectReference> keep;
  std::mutex busy;
};

StepLayer read_layer(Reader& r, Napi::Object o, const StepModel& m, int64_t l) {
  const std::string p = "layers[" + std::to_string(l) + "].";
  const int64_t H = m.hidden, q = m.heads * m.head_dim, kv = m.kv_heads * m.head_dim, I = m.intermediate;
  StepLayer L;
  L.input_norm = r.tensor(o.Get("inputNorm"), p + "inputNorm", {H});
  L.post_norm = r.tensor(o.Get("postNorm"), p + "postNorm", {H});
  L.qkv = r.tensor(o.Get("qkv"), p + "qkv", {q + 2 * kv, H});
  Napi::Value bias = o.Get("qkvBias");
  L.qkv_bias = lm_tensor{};
  if (!bias.IsNull() && !bias.IsUndefined()) {
    L.qkv_bias = r.tensor(bias, p + "qkvBias", {q + 2 * kv});
    if (L.qkv_bias.dtype != LM_F32) throw ArgError{LM_ERR_DTYPE, p + "qkvBias must be f32"};
  }
  L.o = r.tensor(o.Get("o"), p + "o", {H, q});
  L.sliding_window = static_cast<int32_t>(int_field(o, "slidingWindow", 0, INT32_MAX));
  Napi::Object cache = o.Get("cache").As<Napi::Object>();
  const int64_t blocks = int_field(cache, "blocks", 1, INT32_MAX), block_size = int_field(cache, "blockSize", 1, INT32_MAX);
  L.k_cache = r.tensor(cache.Get("k"), p + "cache.k", {blocks, block_size, m.kv_heads, m.head_dim});
  L.v_cache = r.tensor(cache.Get("v"), p + "cache.v", {blocks, block_size, m.kv_heads, m.head_dim});
  if (m.experts > 0) {
    L.moe = true;
    L.router = r.tensor(o.Get("router"), p + "router", {m.experts, H});
    Napi::Value ev = o.Get("experts");
    if (!ev.IsArray() || ev.As<Napi::Array>().Length() != static_cast<uint32_t>(m.experts)) {
      throw ArgError{LM_ERR_ARGUMENT, p + "experts must list " + std::to_string(m.experts) + " experts"};
    }
    Napi::Array experts = ev.As<Napi::Array>();
    for (uint32_t e = 0; e < experts.Length(); e++) {
      Napi::Object x = experts.Get(e).As<Napi::Object>();
      const std::string pe = p + "experts[" + std::to_string(e) + "].";
      L.expert_gate_up.push_back(r.tensor(x.Get("gateUp"), pe + "gateUp", {2 * I, H}));
      L.expert_down.push_back(r.tensor(x.Get("down"), pe + "down", {H, I}));
    }
  } else {
    L.gate_up = r.tensor(o.Get("gateUp"), p + "gateUp", {2 * I, H});
    L.down = r.tensor(o.Get("down"), p + "down", {H, I});
  }
  return L;
}

void throw_js(Napi::Env env, const ArgError& e) { make_error(env, e.status, e.message, StepPhase::kOp).ThrowAsJavaScriptException(); }

// createStepModel({hidden, heads, kvHeads, headDim, intermediate, vocab, experts, topK, eps,
//   rotaryDim, invFreq, attentionScaling, embed, finalNorm, lmHead, layers: [...]})
Napi::Value CreateStepModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto handle = std::make_unique<ModelHandle>();
  try {
    if (!info[0].IsObject()) throw ArgError{LM_ERR_ARGUMENT, "createStepModel(spec): spec must be an object"};
    Napi::Object o = info[0].As<Napi::Object>();
    Reader r{&handle->keep};
    StepModel& m = handle->model;
    m.hidden = int_field(o, "hidden", 1, INT32_MAX);
    m.heads = int_field(o, "heads", 1, 65536);
    m.kv_heads = int_field(o, "kvHeads", 1, 65536);
    m.head_dim = int_field(o, "headDim", 1, 65536);
    m.intermediate = int_field(o, "intermediate", 1, INT32_MAX);
    m.vocab = int_field(o, "vocab", 1, INT32_MAX);
    m.experts = static_cast<int32_t>(int_field(o, "experts", 0, 65536));
    m.top_k = static_cast<int32_t>(int_field(o, "topK", 0, 65536));
    m.rotary_dim = static_cast<int32_t>(int_field(o, "rotaryDim", 2, m.head_dim));
    if (m.experts > 0 && (m.top_k < 1 || m.top_k > m.experts)) throw ArgError{LM_ERR_ARGUMENT, "topK must be in [1, experts]"};
    m.eps = static_cast<float>(num_field(o, "eps"));
    m.attention_scaling = static_cast<float>(num_field(o, "attentionScaling"));
    const float* inv = r.data<float>(o.Get("invFreq"), napi_float32_array, "invFreq", static_cast<size_t>(m.rotary_dim / 2));
    m.inv_freq.assign(inv, inv + m.rotary_dim / 2);
    m.embed = r.tensor(o.Get("embed"), "embed", {m.vocab, m.hidden});
    m.final_norm = r.tensor(o.Get("finalNorm"), "finalNorm", {m.hidden});
    m.lm_head = r.tensor(o.Get("lmHead"), "lmHead", {m.vocab, m.hidden});
    Napi::Value lv = o.Get("layers");
    if (!lv.IsArray()) throw ArgError{LM_ERR_ARGUMENT, "layers must be an array"};
    Napi::Array layers = lv.As<Napi::Array>();
    for (uint32_t l = 0; l < layers.Length(); l++) {
      if (!layers.Get(l).IsObject()) throw ArgError{LM_ERR_ARGUMENT, "layers[" + std::to_string(l) + "] must be an object"};
      m.layers.push_back(read_layer(r, layers.Get(l).As<Napi::Object>(), m, l));
    }
  } catch (const ArgError& e) {
    throw_js(env, e);
    return env.Undefined();
  }
  return Napi::External<ModelHandle>::New(env, handle.release(), [](Napi::Env, ModelHandle* h) { delete h; });
}

Napi::Value WrapBackend(Napi::Env env, BackendPtr backend) {
  return Napi::External<BackendPtr>::New(env, new BackendPtr(std::move(backend)), [](Napi::Env, BackendPtr* p) { delete p; });
}

std::vector<uint8_t> copy_bytes(Napi::Value v, const std::string& name, lm_dtype* dtype) {
  if (!v.IsObject()) throw ArgError{LM_ERR_ARGUMENT, name + " must be a tensor"};
  Napi::Value d = v.As<Napi::Object>().Get("data");
  if (!d.IsTypedArray()) throw ArgError{LM_ERR_ARGUMENT, name + ".data must be a typed array"};
  Napi::TypedArray a = d.As<Napi::TypedArray>();
  if (a.TypedArrayType() == napi_float32_array) *dtype = LM_F32;
  else if (a.TypedArrayType() == napi_uint16_array) *dtype = LM_BF16;
  else throw ArgError{LM_ERR_DTYPE, name + " must be f32 or bf16"};
  const auto* p = static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
  return std::vector<uint8_t>(p, p + a.ByteLength());
}

template <typename T>
std::vector<T> copy_array(Napi::Value v, napi_typedarray_type type, const std::string& name) {
  if (!v.IsObject()) throw ArgError{LM_ERR_ARGUMENT, name + " must be a tensor"};
  Napi::Value d = v.As<Napi::Object>().Get("data");
  if (!d.IsTypedArray() || d.As<Napi::TypedArray>().TypedArrayType() != type) throw ArgError{LM_ERR_DTYPE, name + ": wrong typed array"};
  Napi::TypedArray a = d.As<Napi::TypedArray>();
  const T* p = reinterpret_cast<const T*>(static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  return std::vector<T>(p, p + a.ElementLength());
}

// localSiteBackend({slots: string[], experts, sites: Array<LoraWeights & {moe} | null>}): copies
// the packed pools (layers·4 sites) into a LocalSiteBackend.
Napi::Value LocalSiteBackendNew(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsObject()) throw ArgError{LM_ERR_ARGUMENT, "localSiteBackend(spec): spec must be an object"};
    Napi::Object o = info[0].As<Napi::Object>();
    std::vector<std::string> slots;
    Napi::Value sv = o.Get("slots"), sites_v = o.Get("sites");
    if (!sv.IsArray() || !sites_v.IsArray()) throw ArgError{LM_ERR_ARGUMENT, "slots and sites must be arrays"};
    Napi::Array sa = sv.As<Napi::Array>();
    for (uint32_t i = 0; i < sa.Length(); i++) {
      if (!sa.Get(i).IsString()) throw ArgError{LM_ERR_ARGUMENT, "slots must be strings"};
      slots.push_back(sa.Get(i).As<Napi::String>().Utf8Value());
    }
    const int32_t experts = static_cast<int32_t>(int_field(o, "experts", 0, 65536));
    Napi::Array arr = sites_v.As<Napi::Array>();
    std::vector<PackedSite> sites(arr.Length());
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (v.IsNull() || v.IsUndefined()) continue;
      Napi::Object w = v.As<Napi::Object>();
      const std::string name = "sites[" + std::to_string(i) + "]";
      PackedSite& s = sites[i];
      s.present = true;
      s.moe = w.Get("moe").ToBoolean().Value();
      lm_dtype b_dtype;
      s.a_pool = copy_bytes(w.Get("aPool"), name + ".aPool", &s.dtype);
      s.b_pool = copy_bytes(w.Get("bPool"), name + ".bPool", &b_dtype);
      if (b_dtype != s.dtype) throw ArgError{LM_ERR_DTYPE, name + ": A and B pools must share a dtype"};
      s.n_keys = static_cast<int32_t>(int_field(w, "nKeys", 0, INT32_MAX));
      s.max_rank = static_cast<int32_t>(int_field(w, "maxRank", 0, LM_LORA_MAX_RANK));
      Napi::Value widths = w.Get("sliceWidths");
      if (!widths.IsArray() || widths.As<Napi::Array>().Length() < 1 || widths.As<Napi::Array>().Length() > LM_LORA_MAX_SLICES) {
        throw ArgError{LM_ERR_ARGUMENT, name + ": 1 to 4 slice widths"};
      }
      Napi::Array wa = widths.As<Napi::Array>();
      s.n_slices = static_cast<int32_t>(wa.Length());
      for (uint32_t k = 0; k < wa.Length(); k++) s.slice_width[k] = wa.Get(k).ToNumber().Int32Value();
      s.rank = copy_array<int32_t>(w.Get("rank"), napi_int32_array, name + ".rank");
      s.scale = copy_array<float>(w.Get("scale"), napi_float32_array, name + ".scale");
      s.a_offset = copy_array<int64_t>(w.Get("aOffset"), napi_bigint64_array, name + ".aOffset");
      s.b_offset = copy_array<int64_t>(w.Get("bOffset"), napi_bigint64_array, name + ".bOffset");
    }
    auto backend = std::make_shared<LocalSiteBackend>(std::move(slots), experts, std::move(sites));
    const lm_status s = backend->validate();
    if (s != LM_OK) throw ArgError{s, lm_last_error()};
    return WrapBackend(env, backend);
  } catch (const ArgError& e) {
    throw_js(env, e);
    return env.Undefined();
  }
}

Napi::Value CallbackSiteBackendNew(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) {
    throw_js(env, ArgError{LM_ERR_ARGUMENT, "callbackSiteBackend(fn): fn must be a function"});
    return env.Undefined();
  }
  return WrapBackend(env, std::make_shared<CallbackSiteBackend>(env, info[0].As<Napi::Function>()));
}

// armCallbackSiteBackend(backend, step): names the step a kept callback backend runs next (its
// requests carry it as `step`). False when the handle is not a callback backend.
Napi::Value ArmCallbackSiteBackend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsExternal() || !info[1].IsNumber()) {
    throw_js(env, ArgError{LM_ERR_ARGUMENT, "armCallbackSiteBackend(backend, step)"});
    return env.Undefined();
  }
  const BackendPtr& backend = *info[0].As<Napi::External<BackendPtr>>().Data();
  auto* callback = dynamic_cast<CallbackSiteBackend*>(backend.get());
  if (callback) callback->arm(static_cast<uint64_t>(info[1].As<Napi::Number>().DoubleValue()));
  return Napi::Boolean::New(env, callback != nullptr);
}

// When a step is announced to its site backends (SiteBackend::announce; LM_RING_ANNOUNCE): 1, the
// default, by announceStep, which forward() calls before it lays the step out (branch m13k); 2 by
// step() itself, right after it queued the step to its thread (branch m13l: measured worse, the
// ring thread then wakes onto the core the step's thread needs; docs/performance.md); 0 never
// (the ring then learns of a step at begin_step).
int announce_mode() {
  static const int mode = static_cast<int>(shm::env_us("LM_RING_ANNOUNCE", 1));
  return mode;
}

// announceStep(backend): a step on it is about to be laid out and queued (SiteBackend::announce;
// under LM_RING_ANNOUNCE=1, the default).
Napi::Value AnnounceStep(const Napi::CallbackInfo& info) {
  if (announce_mode() == 1 && info[0].IsExternal()) {
    const BackendPtr& backend = *info[0].As<Napi::External<BackendPtr>>().Data();
    if (backend) backend->announce();
  }
  return info.Env().Undefined();
}

// disposeSiteBackend(backend): drops the handle's reference now instead of at garbage collection
// (a per-step callback backend holds a thread-safe function until then).
Napi::Value DisposeSiteBackend(const Napi::CallbackInfo& info) {
  if (info[0].IsExternal()) info[0].As<Napi::External<BackendPtr>>().Data()->reset();
  return info.Env().Undefined();
}

// routedSiteBackend(routes: [{adapters: string[], backend, timeoutMs, ring, ucx}], fallback | null): per
// adapter, the backend that serves its rows (issue 13: rings straight from the step's thread).
Napi::Value RoutedSiteBackendNew(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (!info[0].IsArray()) throw ArgError{LM_ERR_ARGUMENT, "routedSiteBackend(routes, fallback): routes must be an array"};
    Napi::Array arr = info[0].As<Napi::Array>();
    std::vector<SiteRoute> routes;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      if (!arr.Get(i).IsObject()) throw ArgError{LM_ERR_ARGUMENT, "routes must be objects"};
      Napi::Object o = arr.Get(i).As<Napi::Object>();
      SiteRoute r;
      Napi::Value b = o.Get("backend"), ids = o.Get("adapters");
      if (!b.IsExternal()) throw ArgError{LM_ERR_ARGUMENT, "routes[].backend must be a site backend"};
      r.backend = *b.As<Napi::External<BackendPtr>>().Data();
      if (!r.backend) throw ArgError{LM_ERR_ARGUMENT, "routes[].backend was disposed"};
      if (!ids.IsArray()) throw ArgError{LM_ERR_ARGUMENT, "routes[].adapters must be an array of ids"};
      for (uint32_t k = 0; k < ids.As<Napi::Array>().Length(); k++) {
        Napi::Value id = ids.As<Napi::Array>().Get(k);
        if (!id.IsString()) throw ArgError{LM_ERR_ARGUMENT, "routes[].adapters must be strings"};
        r.adapters.push_back(id.As<Napi::String>().Utf8Value());
      }
      r.timeout_us = int_field(o, "timeoutMs", 0, INT32_MAX) * 1000;
      r.ring = o.Get("ring").ToBoolean().Value();
      r.ucx = o.Get("ucx").ToBoolean().Value();
      routes.push_back(std::move(r));
    }
    BackendPtr fallback;
    if (info.Length() > 1 && info[1].IsExternal()) fallback = *info[1].As<Napi::External<BackendPtr>>().Data();
    else if (info.Length() > 1 && !info[1].IsNull() && !info[1].IsUndefined())
      throw ArgError{LM_ERR_ARGUMENT, "fallback must be a site backend or null"};
    return WrapBackend(env, std::make_shared<RoutedSiteBackend>(std::move(routes), std::move(fallback)));
  } catch (const ArgError& e) {
    throw_js(env, e);
    return env.Undefined();
  }
}

Napi::Value RoutedSiteStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const RoutedStats& s = routed_stats();
  Napi::Object out = Napi::Object::New(env);
  out.Set("ringSites", Napi::Number::New(env, static_cast<double>(s.ring_sites.load())));
  out.Set("ringRows", Napi::Number::New(env, static_cast<double>(s.ring_rows.load())));
  out.Set("ucxSites", Napi::Number::New(env, static_cast<double>(s.ucx_sites.load())));
  out.Set("ucxRows", Napi::Number::New(env, static_cast<double>(s.ucx_rows.load())));
  out.Set("fallbackSites", Napi::Number::New(env, static_cast<double>(s.fallback_sites.load())));
  out.Set("notFound", Napi::Number::New(env, static_cast<double>(s.not_found.load())));
  out.Set("tooBig", Napi::Number::New(env, static_cast<double>(s.too_big.load())));
  return out;
}

// Times one site's post → wait on a native thread, as the step does it (benchmarks only).
class RoundTripWorker : public Napi::AsyncWorker {
 public:
  RoundTripWorker(Napi::Env env, BackendPtr backend)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), backend_(std::move(backend)) {}
  Napi::Promise::Deferred deferred_;
  std::vector<std::string> ids;
  std::vector<int32_t> row_adapter;
  std::vector<float> x, delta;
  SiteCall call{};
  int64_t iterations = 0, timeout_us = 0;
  bool phases = false;  // also each ring site's phases (bench diagnostics)
  std::vector<double> us;

  void Execute() override {
    const priority::Scope raised(call.rows <= priority::rt_rows());  // timed like the step thread whose sites it stands for
    std::vector<const char*> names;
    for (const auto& id : ids) names.push_back(id.c_str());
    call.x = x.data();
    call.row_adapter = row_adapter.data();
    call.delta = delta.data();
    status_ = backend_->begin_step(names.data(), static_cast<int32_t>(names.size()));
    for (int64_t i = 0; i < iterations && status_ == LM_OK; i++) {
      const uint64_t sleeps = phases ? shm::thread_ring_totals().worker_sleeps : 0;
      const auto t0 = std::chrono::steady_clock::now();
      uint64_t ticket = 0;
      status_ = backend_->post(call, &ticket);
      if (status_ == LM_OK) status_ = backend_->wait(ticket, timeout_us);
      us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      if (phases) {
        // The ring's stamps of this site (zeros when it did not go through a ring on this thread).
        const shm::SiteTiming& t = shm::last_site_timing();
        const bool ring = t.post_ns > 0;
        auto d = [&](int64_t a, int64_t b) { return ring ? static_cast<double>(b - a) / 1e3 : 0.0; };
        us.push_back(d(t.post_ns, t.seen_ns));
        us.push_back(d(t.seen_ns, t.run_ns));
        us.push_back(d(t.run_ns, t.done_ns));
        us.push_back(d(t.done_ns, t.woke_ns));
        us.push_back(static_cast<double>(shm::thread_ring_totals().worker_sleeps - sleeps));
      }
    }
    if (status_ != LM_OK) message_ = lm_last_error();
    backend_->end_step();
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (status_ != LM_OK) return deferred_.Reject(make_error(env, status_, message_, StepPhase::kSite).Value());
    Napi::Float64Array out = Napi::Float64Array::New(env, us.size());
    std::copy(us.begin(), us.end(), out.Data());
    deferred_.Resolve(out);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  BackendPtr backend_;
  lm_status status_ = LM_OK;
  std::string message_;
};

// siteRoundTrips(backend, {adapters, layer, site, rows, inFeatures, outFeatures, x, rowAdapter,
//   iterations, timeoutMs, phases?}) → Promise<Float64Array> µs per post → wait; with phases, six
//   numbers per site: µs, then the ring's queue, batch, compute and wake µs, and whether the worker slept.
Napi::Value SiteRoundTrips(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto reject = [&](const ArgError& e) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(make_error(env, e.status, e.message, StepPhase::kOp).Value());
    return d.Promise();
  };
  try {
    if (!info[0].IsExternal() || !info[1].IsObject()) throw ArgError{LM_ERR_ARGUMENT, "siteRoundTrips(backend, spec)"};
    BackendPtr backend = *info[0].As<Napi::External<BackendPtr>>().Data();
    if (!backend) throw ArgError{LM_ERR_ARGUMENT, "the site backend was disposed"};
    Napi::Object o = info[1].As<Napi::Object>();
    auto worker = std::make_unique<RoundTripWorker>(env, backend);
    std::vector<Napi::ObjectReference> keep;
    Reader r{&keep};
    SiteCall& c = worker->call;
    c.layer = static_cast<int32_t>(int_field(o, "layer", 0, INT32_MAX));
    c.site = static_cast<SiteId>(int_field(o, "site", 0, 3));
    c.rows = int_field(o, "rows", 1, 1 << 20);
    c.in_features = int_field(o, "inFeatures", 1, 1 << 20);
    c.out_features = int_field(o, "outFeatures", 1, 1 << 20);
    worker->iterations = int_field(o, "iterations", 1, 1 << 24);
    worker->timeout_us = int_field(o, "timeoutMs", 0, INT32_MAX) * 1000;
    worker->phases = o.Has("phases") && o.Get("phases").ToBoolean().Value();
    const float* x = r.data<float>(o.Get("x"), napi_float32_array, "x", static_cast<size_t>(c.rows * c.in_features));
    worker->x.assign(x, x + c.rows * c.in_features);
    const int32_t* ra = r.data<int32_t>(o.Get("rowAdapter"), napi_int32_array, "rowAdapter", static_cast<size_t>(c.rows));
    worker->row_adapter.assign(ra, ra + c.rows);
    Napi::Value ids = o.Get("adapters");
    if (!ids.IsArray()) throw ArgError{LM_ERR_ARGUMENT, "adapters must be an array of ids"};
    for (uint32_t i = 0; i < ids.As<Napi::Array>().Length(); i++)
      worker->ids.push_back(ids.As<Napi::Array>().Get(i).ToString().Utf8Value());
    for (int32_t a : worker->row_adapter)
      if (a < -1 || a >= static_cast<int32_t>(worker->ids.size())) throw ArgError{LM_ERR_SLOT, "rowAdapter names no adapter"};
    worker->delta.assign(static_cast<size_t>(c.rows * c.out_features), 0.0f);
    Napi::Promise p = worker->deferred_.Promise();
    worker.release()->Queue();
    return p;
  } catch (const ArgError& e) {
    return reject(e);
  }
}

class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, ModelHandle* model, BackendPtr backend)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), model_(model), backend_(std::move(backend)) {}

  Napi::Promise promise() { return deferred_.Promise(); }
  StepBatch batch;
  Napi::Reference<Napi::Value> model_ref;   // keeps the model handle (and so its weights) alive
  std::vector<Napi::ObjectReference> keep;  // the step's arrays
  std::vector<std::string> adapter_ids;
  std::vector<const char*> adapter_ptrs;

  void Execute() override {
    // A libuv pool thread: named for per-thread CPU profiles (bench:mesh --threads); it keeps the
    // name for whatever it runs next, which on a worker is mostly steps.
    name_this_thread("lm-step");
    // Raised for this step only (and under fifo only a decode-sized one, priority.h's rt_rows): the
    // thread goes back to libuv's pool afterwards.
    const priority::Scope raised(batch.tokens <= priority::rt_rows());
    std::lock_guard<std::mutex> lock(model_->busy);
    // Ring sites are waited for on this thread: the difference of its sums is this step's.
    const shm::RingTotals before = shm::thread_ring_totals();
    status_ = run_step(model_->model, batch, backend_.get(), &phase_);
    if (status_ != LM_OK) message_ = lm_last_error();  // thread-local: read on the thread that failed
    const shm::RingTotals after = shm::thread_ring_totals();
    ring_.sites = after.sites - before.sites;
    ring_.worker_sleeps = after.worker_sleeps - before.worker_sleeps;
    ring_.wait_ns = after.wait_ns - before.wait_ns;
    ring_.queue_ns = after.queue_ns - before.queue_ns;
    ring_.batch_ns = after.batch_ns - before.batch_ns;
    ring_.compute_ns = after.compute_ns - before.compute_ns;
    ring_.wake_ns = after.wake_ns - before.wake_ns;
  }
  // Resolves with the step's ring-site timing (zeros when no site went through a ring).
  void OnOK() override {
    Napi::Env env = Env();
    if (status_ != LM_OK) return deferred_.Reject(make_error(env, status_, message_, phase_).Value());
    Napi::Object t = Napi::Object::New(env);
    auto us = [](int64_t ns) { return static_cast<double>(ns) / 1e3; };
    t.Set("ringSites", Napi::Number::New(env, static_cast<double>(ring_.sites)));
    t.Set("ringSleeps", Napi::Number::New(env, static_cast<double>(ring_.worker_sleeps)));
    t.Set("ringWaitUs", Napi::Number::New(env, us(ring_.wait_ns)));
    t.Set("ringQueueUs", Napi::Number::New(env, us(ring_.queue_ns)));
    t.Set("ringBatchUs", Napi::Number::New(env, us(ring_.batch_ns)));
    t.Set("ringComputeUs", Napi::Number::New(env, us(ring_.compute_ns)));
    t.Set("ringWakeUs", Napi::Number::New(env, us(ring_.wake_ns)));
    deferred_.Resolve(t);
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  ModelHandle* model_;
  BackendPtr backend_;
  lm_status status_ = LM_OK;
  StepPhase phase_ = StepPhase::kNone;
  std::string message_;
  shm::RingTotals ring_;
};

void read_batch(StepWorker& w, const StepModel& m, Napi::Object o) {
  Reader r{&w.keep};
  StepBatch& b = w.batch;
  b.tokens = int_field(o, "tokens", 0, INT32_MAX);
  b.seqs = int_field(o, "seqs", 0, INT32_MAX);
  b.max_blocks = int_field(o, "maxBlocks", 1, INT32_MAX);
  const auto T = static_cast<size_t>(b.tokens);
  b.ids = r.data<int32_t>(o.Get("ids"), napi_int32_array, "ids", T);
  b.positions = r.data<int32_t>(o.Get("positions"), napi_int32_array, "positions", T);
  b.token_seq = r.data<int32_t>(o.Get("tokenSeq"), napi_int32_array, "tokenSeq", T);
  b.slots = r.data<int32_t>(o.Get("slots"), napi_int32_array, "slots", T);
  b.row_adapter = r.data<int32_t>(o.Get("rowAdapter"), napi_int32_array, "rowAdapter", T);
  b.block_tables = r.data<int32_t>(o.Get("blockTables"), napi_int32_array, "blockTables", static_cast<size_t>(b.seqs * b.max_blocks));
  Napi::Value av = o.Get("adapters");
  if (!av.IsArray()) throw ArgError{LM_ERR_ARGUMENT, "adapters must be an array of ids"};
  Napi::Array adapters = av.As<Napi::Array>();
  for (uint32_t i = 0; i < adapters.Length(); i++) {
    if (!adapters.Get(i).IsString()) throw ArgError{LM_ERR_ARGUMENT, "adapters must be strings"};
    w.adapter_ids.push_back(adapters.Get(i).As<Napi::String>().Utf8Value());
  }
  for (const auto& id : w.adapter_ids) w.adapter_ptrs.push_back(id.c_str());
  b.adapter_ids = w.adapter_ptrs.data();
  b.n_adapters = static_cast<int32_t>(w.adapter_ids.size());
  for (size_t t = 0; t < T; t++) {
    if (b.token_seq[t] < 0 || b.token_seq[t] >= b.seqs) throw ArgError{LM_ERR_SLOT, "tokenSeq[" + std::to_string(t) + "] is outside [0, seqs)"};
    if (b.row_adapter[t] < -1 || b.row_adapter[t] >= b.n_adapters) throw ArgError{LM_ERR_SLOT, "rowAdapter[" + std::to_string(t) + "] names no adapter"};
  }
  Napi::TypedArray rows = r.array(o.Get("logitRows"), napi_int32_array, "logitRows");
  b.n_logit_rows = static_cast<int64_t>(rows.ElementLength());
  b.logit_rows = r.data<int32_t>(rows, napi_int32_array, "logitRows", rows.ElementLength());
  b.logits = const_cast<float*>(r.data<float>(o.Get("logits"), napi_float32_array, "logits", static_cast<size_t>(b.n_logit_rows * m.vocab)));
  Napi::Value inv = o.Get("invFreq");
  if (!inv.IsNull() && !inv.IsUndefined()) {
    b.inv_freq = r.data<float>(inv, napi_float32_array, "invFreq", static_cast<size_t>(m.rotary_dim / 2));
    b.attention_scaling = static_cast<float>(num_field(o, "attentionScaling"));
  } else {
    b.attention_scaling = m.attention_scaling;
  }
  b.site_timeout_us = int_field(o, "siteTimeoutMs", 0, INT32_MAX) * 1000;
}

// step(model, batch, backend | null) → Promise<void>; the logits are written into batch.logits.
Napi::Value Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto reject = [&](const ArgError& e) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(make_error(env, e.status, e.message, StepPhase::kOp).Value());
    return d.Promise();
  };
  if (!info[0].IsExternal() || !info[1].IsObject()) return reject({LM_ERR_ARGUMENT, "step(model, batch, backend)"});
  auto* model = info[0].As<Napi::External<ModelHandle>>().Data();
  BackendPtr backend;
  if (info.Length() > 2 && info[2].IsExternal()) backend = *info[2].As<Napi::External<BackendPtr>>().Data();
  else if (info.Length() > 2 && !info[2].IsNull() && !info[2].IsUndefined()) return reject({LM_ERR_ARGUMENT, "backend must be a site backend or null"});
  auto* worker = new StepWorker(env, model, backend);
  try {
    worker->model_ref = Napi::Reference<Napi::Value>::New(info[0], 1);
    read_batch(*worker, model->model, info[1].As<Napi::Object>());
  } catch (const ArgError& e) {
    delete worker;
    return reject(e);
  }
  Napi::Promise p = worker->promise();
  // LM_RING_ANNOUNCE=2: the announce after the queueing (the ring's thread wakes while libuv hands
  // the step over, not during the layout on the event loop).
  const bool announce = announce_mode() == 2 && backend && worker->batch.n_adapters > 0;
  worker->Queue();
  if (announce) backend->announce();
  return p;
}

}  // namespace

void register_step_binding(Napi::Env env, Napi::Object exports) {
  exports.Set("createStepModel", Napi::Function::New(env, CreateStepModel));
  exports.Set("localSiteBackend", Napi::Function::New(env, LocalSiteBackendNew));
  exports.Set("callbackSiteBackend", Napi::Function::New(env, CallbackSiteBackendNew));
  exports.Set("disposeSiteBackend", Napi::Function::New(env, DisposeSiteBackend));
  exports.Set("armCallbackSiteBackend", Napi::Function::New(env, ArmCallbackSiteBackend));
  exports.Set("announceStep", Napi::Function::New(env, AnnounceStep));
  exports.Set("routedSiteBackend", Napi::Function::New(env, RoutedSiteBackendNew));
  exports.Set("routedSiteStats", Napi::Function::New(env, RoutedSiteStats));
  exports.Set("siteRoundTrips", Napi::Function::New(env, SiteRoundTrips));
  exports.Set("step", Napi::Function::New(env, Step));
}

}  // namespace lm
