// Node-API binding of the loramesh core. Ops run in Napi::AsyncWorkers (off the JS thread) and
// return Promises; the worker holds references to every typed array it reads or writes until it
// finishes. A bad shape, dtype, slot or device rejects with an Error whose `code` is the core's
// status name (LM_ERR_SHAPE, ...); the TypeScript wrapper turns those into typed errors.
#include <napi.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <algorithm>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../src/priority.h"
#include "loramesh/core.h"
#include "shm_binding.h"
#include "ucx_binding.h"
#include "status_name.h"

namespace lm { void register_step_binding(Napi::Env env, Napi::Object exports); }  // step_binding.cpp

namespace {

using lm::addon::status_name;

Napi::Error make_error(Napi::Env env, lm_status status, const std::string& message) {
  Napi::Error err = Napi::Error::New(env, message);
  err.Set("code", Napi::String::New(env, status_name(status)));
  return err;
}

// Thrown while reading arguments on the JS thread.
struct ArgError {
  lm_status status;
  std::string message;
};

// Everything one call needs: parsed tensors (stable storage) and references keeping arrays alive.
struct Call {
  std::vector<std::unique_ptr<lm_tensor>> tensors;
  std::vector<Napi::ObjectReference> keep;
  std::vector<int32_t> ints;

  lm_tensor* tensor(Napi::Value value, const char* name) {
    if (!value.IsObject()) throw ArgError{LM_ERR_ARGUMENT, std::string(name) + " must be a tensor object"};
    Napi::Object obj = value.As<Napi::Object>();
    Napi::Value dtype_v = obj.Get("dtype"), shape_v = obj.Get("shape"), data_v = obj.Get("data");
    if (!dtype_v.IsString() || !shape_v.IsArray() || !data_v.IsTypedArray()) {
      throw ArgError{LM_ERR_ARGUMENT, std::string(name) + " must be {dtype, shape, data: TypedArray}"};
    }
    const std::string dtype = dtype_v.As<Napi::String>().Utf8Value();
    Napi::TypedArray data = data_v.As<Napi::TypedArray>();
    auto t = std::make_unique<lm_tensor>();
    napi_typedarray_type expected;
    size_t elem;
    if (dtype == "f32") {
      t->dtype = LM_F32, expected = napi_float32_array, elem = 4;
    } else if (dtype == "bf16") {
      t->dtype = LM_BF16, expected = napi_uint16_array, elem = 2;
    } else if (dtype == "i32") {
      t->dtype = LM_I32, expected = napi_int32_array, elem = 4;
    } else if (dtype == "i64") {
      t->dtype = LM_I64, expected = napi_bigint64_array, elem = 8;
    } else {
      throw ArgError{LM_ERR_DTYPE, std::string(name) + ": unknown dtype \"" + dtype + "\""};
    }
    if (data.TypedArrayType() != expected) {
      throw ArgError{LM_ERR_DTYPE, std::string(name) + ": dtype " + dtype + " needs a " +
                                       (dtype == "f32" ? "Float32Array" : dtype == "bf16" ? "Uint16Array" : dtype == "i32" ? "Int32Array" : "BigInt64Array")};
    }
    Napi::Array shape = shape_v.As<Napi::Array>();
    if (shape.Length() > LM_MAX_DIMS) throw ArgError{LM_ERR_SHAPE, std::string(name) + ": at most 4 dimensions"};
    t->ndim = static_cast<int32_t>(shape.Length());
    double count = 1;
    for (uint32_t i = 0; i < shape.Length(); i++) {
      Napi::Value d = shape.Get(i);
      if (!d.IsNumber()) throw ArgError{LM_ERR_SHAPE, std::string(name) + ": shape entries must be numbers"};
      const double v = d.As<Napi::Number>().DoubleValue();
      if (v < 0 || v != static_cast<double>(static_cast<int64_t>(v))) throw ArgError{LM_ERR_SHAPE, std::string(name) + ": shape entries must be non-negative integers"};
      t->shape[i] = static_cast<int64_t>(v);
      count *= v;
    }
    if (count != static_cast<double>(data.ElementLength())) {
      throw ArgError{LM_ERR_SHAPE, std::string(name) + ": shape holds " + std::to_string(static_cast<int64_t>(count)) +
                                       " elements but the array has " + std::to_string(data.ElementLength())};
    }
    (void)elem;
    t->data = static_cast<uint8_t*>(data.ArrayBuffer().Data()) + data.ByteOffset();
    t->device = LM_CPU;
    t->device_index = 0;
    keep.push_back(Napi::Persistent(data.As<Napi::Object>()));
    tensors.push_back(std::move(t));
    return tensors.back().get();
  }

  lm_tensor* optional_tensor(Napi::Value value, const char* name) {
    return value.IsNull() || value.IsUndefined() ? nullptr : tensor(value, name);
  }
};

double number(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (info.Length() <= i || !info[i].IsNumber()) throw ArgError{LM_ERR_ARGUMENT, std::string(name) + " must be a number"};
  return info[i].As<Napi::Number>().DoubleValue();
}

int32_t integer(const Napi::CallbackInfo& info, size_t i, const char* name) {
  const double v = number(info, i, name);
  if (v != static_cast<double>(static_cast<int32_t>(v))) throw ArgError{LM_ERR_ARGUMENT, std::string(name) + " must be a 32-bit integer"};
  return static_cast<int32_t>(v);
}

class OpWorker : public Napi::AsyncWorker {
 public:
  OpWorker(Napi::Env env, std::shared_ptr<Call> call, std::function<lm_status()> op)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), call_(std::move(call)), op_(std::move(op)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    status_ = op_();
    if (status_ != LM_OK) message_ = lm_last_error();  // thread-local: read on the thread that failed
  }
  void OnOK() override {
    Napi::Env env = Env();
    if (status_ == LM_OK) deferred_.Resolve(env.Undefined());
    else deferred_.Reject(make_error(env, status_, message_).Value());
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Call> call_;
  std::function<lm_status()> op_;
  lm_status status_ = LM_OK;
  std::string message_;
};

// Parses arguments with `build` (on the JS thread), then runs the op it returns in a worker.
Napi::Value run_async(const Napi::CallbackInfo& info,
                      const std::function<std::function<lm_status()>(Call&)>& build) {
  Napi::Env env = info.Env();
  auto call = std::make_shared<Call>();
  std::function<lm_status()> op;
  try {
    op = build(*call);
  } catch (const ArgError& e) {
    auto deferred = Napi::Promise::Deferred::New(env);
    deferred.Reject(make_error(env, e.status, e.message).Value());
    return deferred.Promise();
  }
  auto* worker = new OpWorker(env, call, std::move(op));
  Napi::Promise p = worker->promise();
  worker->Queue();
  return p;
}

Napi::Value Embedding(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto *table = c.tensor(info[0], "table"), *ids = c.tensor(info[1], "ids"), *out = c.tensor(info[2], "out");
    return [=] { return lm_embedding(table, ids, out); };
  });
}

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto *x = c.tensor(info[0], "x"), *w = c.tensor(info[1], "weight");
    const float eps = static_cast<float>(number(info, 2, "eps"));
    auto* out = c.tensor(info[3], "out");
    return [=] { return lm_rmsnorm(x, w, eps, out); };
  });
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto *x = c.tensor(info[0], "x"), *pos = c.tensor(info[1], "positions"), *inv = c.tensor(info[2], "invFreq");
    const int32_t rotary = integer(info, 3, "rotaryDim");
    const float scaling = static_cast<float>(number(info, 4, "attentionScaling"));
    return [=] { return lm_rope(x, pos, inv, rotary, scaling); };
  });
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto *x = c.tensor(info[0], "x"), *w = c.tensor(info[1], "weight");
    auto* bias = c.optional_tensor(info[2], "bias");
    auto* out = c.tensor(info[3], "out");
    return [=] { return lm_matmul(x, w, bias, out); };
  });
}

Napi::Value KvCacheWrite(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto *k = c.tensor(info[0], "k"), *v = c.tensor(info[1], "v"), *kc = c.tensor(info[2], "kCache"),
         *vc = c.tensor(info[3], "vCache"), *slots = c.tensor(info[4], "slotMapping");
    return [=] { return lm_kv_cache_write(k, v, kc, vc, slots); };
  });
}

Napi::Value Attention(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto *q = c.tensor(info[0], "q"), *kc = c.tensor(info[1], "kCache"), *vc = c.tensor(info[2], "vCache"),
         *tables = c.tensor(info[3], "blockTables"), *seq = c.tensor(info[4], "tokenSeq"), *pos = c.tensor(info[5], "tokenPos");
    const float scale = static_cast<float>(number(info, 6, "scale"));
    const int32_t window = integer(info, 7, "slidingWindow");
    auto* out = c.tensor(info[8], "out");
    return [=] { return lm_attention(q, kc, vc, tables, seq, pos, scale, window, out); };
  });
}

Napi::Value SiluMul(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto *gu = c.tensor(info[0], "gateUp"), *out = c.tensor(info[1], "out");
    return [=] { return lm_silu_mul(gu, out); };
  });
}

Napi::Value MoeRoute(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto* logits = c.tensor(info[0], "logits");
    const int32_t k = integer(info, 1, "topK");
    const int32_t renorm = info[2].ToBoolean().Value() ? 1 : 0;
    auto *experts = c.tensor(info[3], "experts"), *weights = c.tensor(info[4], "weights");
    return [=] { return lm_moe_route(logits, k, renorm, experts, weights); };
  });
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto *a = c.tensor(info[0], "a"), *b = c.tensor(info[1], "b");
    return [=] { return lm_add(a, b); };
  });
}

Napi::Value Argmax(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto *logits = c.tensor(info[0], "logits"), *out = c.tensor(info[1], "out");
    return [=] { return lm_argmax(logits, out); };
  });
}

Napi::Value TopK(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto* logits = c.tensor(info[0], "logits");
    const int32_t k = integer(info, 1, "k");
    auto *idx = c.tensor(info[2], "indices"), *vals = c.tensor(info[3], "values");
    return [=] { return lm_topk(logits, k, idx, vals); };
  });
}

// {aPool, bPool, nKeys, sliceWidths, rank, scale, aOffset, bOffset, maxRank}
std::shared_ptr<lm_lora_weights> lora_weights(Call& c, Napi::Value value) {
  if (!value.IsObject()) throw ArgError{LM_ERR_ARGUMENT, "lora weights must be an object"};
  Napi::Object o = value.As<Napi::Object>();
  auto w = std::make_shared<lm_lora_weights>();
  w->a_pool = c.tensor(o.Get("aPool"), "aPool");
  w->b_pool = c.tensor(o.Get("bPool"), "bPool");
  w->rank = c.tensor(o.Get("rank"), "rank");
  w->scale = c.tensor(o.Get("scale"), "scale");
  w->a_offset = c.tensor(o.Get("aOffset"), "aOffset");
  w->b_offset = c.tensor(o.Get("bOffset"), "bOffset");
  Napi::Value n_keys = o.Get("nKeys"), max_rank = o.Get("maxRank"), widths = o.Get("sliceWidths");
  if (!n_keys.IsNumber() || !max_rank.IsNumber() || !widths.IsArray()) {
    throw ArgError{LM_ERR_ARGUMENT, "lora weights need nKeys, maxRank and sliceWidths"};
  }
  w->n_keys = n_keys.As<Napi::Number>().Int32Value();
  w->max_rank = max_rank.As<Napi::Number>().Int32Value();
  Napi::Array wa = widths.As<Napi::Array>();
  if (wa.Length() < 1 || wa.Length() > LM_LORA_MAX_SLICES) throw ArgError{LM_ERR_ARGUMENT, "lora: 1 to 4 slice widths"};
  w->n_slices = static_cast<int32_t>(wa.Length());
  for (uint32_t i = 0; i < wa.Length(); i++) {
    Napi::Value v = wa.Get(i);
    if (!v.IsNumber()) throw ArgError{LM_ERR_ARGUMENT, "lora: slice widths must be numbers"};
    w->slice_width[i] = v.As<Napi::Number>().Int32Value();
  }
  return w;
}

Napi::Value LoraApply(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto w = lora_weights(c, info[0]);
    auto *x = c.tensor(info[1], "x"), *slots = c.tensor(info[2], "tokenSlot"), *y = c.tensor(info[3], "y");
    return [=] { return lm_lora_apply(w.get(), x, slots, y); };
  });
}

Napi::Value LoraApplyMoe(const Napi::CallbackInfo& info) {
  return run_async(info, [&](Call& c) {
    auto w = lora_weights(c, info[0]);
    const int32_t experts = integer(info, 1, "nExperts");
    auto* x = c.tensor(info[2], "x");
    auto* row_token = c.optional_tensor(info[3], "rowToken");
    auto *row_slot = c.tensor(info[4], "rowSlot"), *row_expert = c.tensor(info[5], "rowExpert");
    auto* row_weight = c.optional_tensor(info[6], "rowWeight");
    auto* y = c.tensor(info[7], "y");
    return [=] { return lm_lora_apply_moe(w.get(), experts, x, row_token, row_slot, row_expert, row_weight, y); };
  });
}

Napi::Value RopeInvFreq(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) {
    make_error(env, LM_ERR_ARGUMENT, "rope config must be an object").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object o = info[0].As<Napi::Object>();
  auto num = [&](const char* key, double fallback) {
    Napi::Value v = o.Get(key);
    return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
  };
  const std::string type = o.Get("type").IsString() ? o.Get("type").As<Napi::String>().Utf8Value() : "default";
  lm_rope_config c{};
  if (type == "default") c.type = LM_ROPE_DEFAULT;
  else if (type == "linear") c.type = LM_ROPE_LINEAR;
  else if (type == "dynamic") c.type = LM_ROPE_DYNAMIC;
  else if (type == "llama3") c.type = LM_ROPE_LLAMA3;
  else if (type == "yarn") c.type = LM_ROPE_YARN;
  else {
    make_error(env, LM_ERR_ARGUMENT, "unsupported rope type \"" + type + "\" (supported: default, linear, dynamic, llama3, yarn)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  c.base = num("base", 10000);
  c.rotary_dim = static_cast<int32_t>(num("rotaryDim", 0));
  c.factor = num("factor", 1);
  c.max_position_embeddings = static_cast<int32_t>(num("maxPositionEmbeddings", 0));
  c.original_max_position_embeddings = static_cast<int32_t>(num("originalMaxPositionEmbeddings", 0));
  c.low_freq_factor = num("lowFreqFactor", 0);
  c.high_freq_factor = num("highFreqFactor", 0);
  c.beta_fast = num("betaFast", 0);
  c.beta_slow = num("betaSlow", 0);
  c.mscale = num("mscale", 0);
  c.mscale_all_dim = num("mscaleAllDim", 0);
  c.attention_factor = num("attentionFactor", 0);
  c.truncate = o.Get("truncate").IsBoolean() ? (o.Get("truncate").As<Napi::Boolean>().Value() ? 1 : 0) : 1;
  const double seq_len = info.Length() > 1 && info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : 0;
  if (c.rotary_dim <= 0 || c.rotary_dim % 2 != 0 || c.rotary_dim > 65536) {
    make_error(env, LM_ERR_ARGUMENT, "rope: rotaryDim must be a positive even number").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Float32Array inv = Napi::Float32Array::New(env, static_cast<size_t>(c.rotary_dim / 2));
  float scaling = 1;
  const lm_status s = lm_rope_inv_freq(&c, static_cast<int64_t>(seq_len), inv.Data(), &scaling);
  if (s != LM_OK) {
    make_error(env, s, lm_last_error()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Object result = Napi::Object::New(env);
  result.Set("invFreq", inv);
  result.Set("attentionScaling", Napi::Number::New(env, scaling));
  return result;
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const lm_status s = lm_set_num_threads(info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : -1);
  if (s != LM_OK) make_error(env, s, lm_last_error()).ThrowAsJavaScriptException();
  return env.Undefined();
}

Napi::Value SetSimd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const lm_status s = lm_set_simd(info[0].ToBoolean().Value() ? 1 : 0);
  if (s != LM_OK) make_error(env, s, lm_last_error()).ThrowAsJavaScriptException();
  return env.Undefined();
}

enum class PrefaultMode { kAsync, kSync, kOff };

// LORAMESH_PREFAULT: async (default), sync or off; read once.
PrefaultMode prefault_mode() {
  static const PrefaultMode mode = [] {
    const char* v = std::getenv("LORAMESH_PREFAULT");
    const std::string s = v ? v : "";
    return s == "sync" ? PrefaultMode::kSync : s == "off" ? PrefaultMode::kOff : PrefaultMode::kAsync;
  }();
  return mode;
}

// LORAMESH_WEIGHTS_HUGE=1: map checkpoint files so that the kernel may use 2 MiB page-table entries
// for them (see map_pmd_aligned); read once.
bool weights_huge() {
  static const bool on = [] {
    const char* v = std::getenv("LORAMESH_WEIGHTS_HUGE");
    return v != nullptr && std::string(v) == "1";
  }();
  return on;
}
// LORAMESH_WEIGHTS_HUGE=0: MADV_NOHUGEPAGE on the mappings, 4 KiB PTEs whatever the page cache holds
// (the measurement's other side).
bool weights_small() {
  static const bool on = [] {
    const char* v = std::getenv("LORAMESH_WEIGHTS_HUGE");
    return v != nullptr && std::string(v) == "0";
  }();
  return on;
}

// A private file mapping whose address is congruent to its file offset modulo 2 MiB, advised
// MADV_HUGEPAGE: the page cache's 2 MiB folios (Linux 6.x with large folios on the filesystem; the
// advice also makes the fault path read ahead in 2 MiB folios) are then mapped by one PMD each
// instead of 512 PTEs. Where the cache holds small folios the mapping falls back to 4 KiB PTEs.
void* map_pmd_aligned(int fd, size_t start, size_t bytes) {
  constexpr size_t kHuge = size_t(2) << 20;
  void* reserve = mmap(nullptr, bytes + kHuge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserve == MAP_FAILED) return MAP_FAILED;
  const auto r = reinterpret_cast<uintptr_t>(reserve);
  const uintptr_t phase = start % kHuge;
  const uintptr_t a = (r - phase + kHuge - 1) / kHuge * kHuge + phase;  // first address >= r with a's phase
  void* addr = mmap(reinterpret_cast<void*>(a), bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd,
                    static_cast<off_t>(start));
  if (addr == MAP_FAILED) {
    munmap(reserve, bytes + kHuge);
    return MAP_FAILED;
  }
  if (a > r) munmap(reserve, a - r);
  if (r + bytes + kHuge > a + bytes) munmap(reinterpret_cast<void*>(a + bytes), r + bytes + kHuge - (a + bytes));
  (void)madvise(addr, bytes, MADV_HUGEPAGE);  // advice only: a kernel without THP keeps 4 KiB pages
  return addr;
}

// Maps bytes [begin, begin+length) of a file (a tensor, or adjacent tensors, of a checkpoint)
// copy-on-write: pages come from the page cache on first touch and are never copied unless written.
// Returns {buffer, offset}: the mapping starts at the page boundary below `begin`, so the bytes sit
// at `offset` in `buffer`. The mapping is released when the ArrayBuffer is garbage-collected.
Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsNumber() || !info[2].IsNumber()) {
    make_error(env, LM_ERR_ARGUMENT, "mapFile(path, begin, length)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const std::string path = info[0].As<Napi::String>().Utf8Value();
  const double begin_d = info[1].As<Napi::Number>().DoubleValue(), length_d = info[2].As<Napi::Number>().DoubleValue();
  // One mapping stays below 4 GiB: the largest ArrayBuffer this Node accepts.
  if (begin_d < 0 || length_d <= 0 || length_d > 4.0 * 1024 * 1024 * 1024 - 65536) {
    make_error(env, LM_ERR_ARGUMENT, "mapFile: begin must be >= 0 and length in (0, 4 GiB)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    make_error(env, LM_ERR_ARGUMENT, "cannot open " + path + ": " + std::strerror(errno)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  struct stat st {};
  const auto begin = static_cast<size_t>(begin_d), length = static_cast<size_t>(length_d);
  if (fstat(fd, &st) != 0 || begin + length > static_cast<size_t>(st.st_size)) {
    close(fd);
    make_error(env, LM_ERR_ARGUMENT, "cannot map " + path + ": the range is outside the file").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  const size_t start = begin / page * page, bytes = begin + length - start;
  void* addr = weights_huge() ? map_pmd_aligned(fd, start, bytes)
                              : mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, static_cast<off_t>(start));
  close(fd);
  if (addr != MAP_FAILED && weights_small()) (void)madvise(addr, bytes, MADV_NOHUGEPAGE);
  if (addr == MAP_FAILED) {
    make_error(env, LM_ERR_MEMORY, "mmap of " + path + " failed: " + std::strerror(errno)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  // Made resident (see src/prefault.cpp): otherwise the first forward pass pays ~500k page faults
  // and first accesses inside its matmuls. By default on a background thread, so loading returns
  // at once; LORAMESH_PREFAULT=sync does it here (as llama.cpp's MAP_POPULATE load does), =off not at all.
  switch (prefault_mode()) {
    case PrefaultMode::kAsync: (void)lm_prefault_async(addr, bytes); break;
    case PrefaultMode::kSync: (void)lm_prefault(addr, bytes); break;
    case PrefaultMode::kOff: break;
  }
  auto* hint = new size_t(bytes);
  Napi::Object result = Napi::Object::New(env);
  result.Set("buffer", Napi::ArrayBuffer::New(env, addr, bytes, [](Napi::Env, void* data, size_t* size) {
    lm_prefault_cancel(data, *size);  // the background thread must be out of the range first
    munmap(data, *size);
    delete size;
  }, hint));
  result.Set("offset", Napi::Number::New(env, static_cast<double>(begin - start)));
  return result;
}

// The fraction of a file's pages in the page cache (mincore over a read-only mapping; maps nothing
// into the page tables and reads nothing).
double resident_fraction(int fd, size_t size) {
  if (size == 0) return 1.0;
  void* addr = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (addr == MAP_FAILED) return -1.0;
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE)), pages = (size + page - 1) / page;
  std::vector<unsigned char> vec(pages);
  double frac = -1.0;
  if (mincore(addr, size, vec.data()) == 0) {
    size_t in = 0;
    for (unsigned char v : vec) in += v & 1;
    frac = static_cast<double>(in) / static_cast<double>(pages);
  }
  munmap(addr, size);
  return frac;
}

// fileCache(path, op): puts a file's pages in a known page-cache state for a benchmark's timed load,
// without root: "evict" writes back and drops its cached pages (posix_fadvise DONTNEED: pages mapped
// by a live process stay), "warm" reads it through once (pread, 4 MiB at a time), "query" changes
// nothing. Returns the fraction of its pages resident afterwards (mincore), -1 if unknown.
Napi::Value FileCache(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString() || !info[1].IsString()) {
    make_error(env, LM_ERR_ARGUMENT, "fileCache(path, op)").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const std::string path = info[0].As<Napi::String>().Utf8Value(), op = info[1].As<Napi::String>().Utf8Value();
  if (op != "evict" && op != "warm" && op != "query") {
    make_error(env, LM_ERR_ARGUMENT, "fileCache: op must be evict, warm or query").ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const int fd = open(path.c_str(), O_RDONLY);
  struct stat st {};
  if (fd < 0 || fstat(fd, &st) != 0) {
    if (fd >= 0) close(fd);
    make_error(env, LM_ERR_ARGUMENT, "cannot open " + path + ": " + std::strerror(errno)).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  const auto size = static_cast<size_t>(st.st_size);
  if (op == "evict") {
    (void)fdatasync(fd);  // dirty pages (a just-written checkpoint) are not dropped
    (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  } else if (op == "warm") {
    std::vector<char> buf(size_t(4) << 20);
    for (size_t off = 0; off < size;) {
      const ssize_t n = pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
  }
  const double frac = resident_fraction(fd, size);
  close(fd);
  return Napi::Number::New(env, frac);
}

Napi::Value ReadBandwidth(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double bytes = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  const int32_t passes = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
  double gbs = 0;
  const lm_status s = lm_read_bandwidth_gbs(static_cast<size_t>(bytes), passes, &gbs);
  if (s != LM_OK) {
    make_error(env, s, lm_last_error()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  return Napi::Number::New(env, gbs);
}

Napi::Value ReadBandwidthPasses(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const double bytes = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : 0;
  const int32_t passes = info[1].IsNumber() ? info[1].As<Napi::Number>().Int32Value() : 0;
  const int32_t threads = info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : 0;
  std::vector<double> gbs(static_cast<size_t>(std::max(passes, 0)));
  const lm_status s = lm_read_bandwidth_passes(static_cast<size_t>(bytes), passes, threads, gbs.data());
  if (s != LM_OK) {
    make_error(env, s, lm_last_error()).ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array out = Napi::Array::New(env, gbs.size());
  for (size_t i = 0; i < gbs.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, gbs[i]));
  return out;
}

// The data-plane priority setting (LORAMESH_DATAPLANE_PRIORITY) and how often it was applied.
Napi::Value DataplanePriority(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const lm::priority::Stats s = lm::priority::stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("setting", Napi::String::New(env, lm::priority::describe(lm::priority::current())));
  o.Set("raised", Napi::Number::New(env, static_cast<double>(s.raised)));
  o.Set("refused", Napi::Number::New(env, static_cast<double>(s.refused)));
  o.Set("error", Napi::String::New(env, s.error));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("mapFile", Napi::Function::New(env, MapFile));
  exports.Set("fileCache", Napi::Function::New(env, FileCache));
  exports.Set("readBandwidthGbs", Napi::Function::New(env, ReadBandwidth));
  exports.Set("readBandwidthPasses", Napi::Function::New(env, ReadBandwidthPasses));
  exports.Set("version", Napi::String::New(env, lm_version()));
  exports.Set("cudaBuilt", Napi::Boolean::New(env, lm_cuda_built() != 0));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Napi::Number::New(i.Env(), lm_cuda_device_count()); }));
  exports.Set("getNumThreads", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Napi::Number::New(i.Env(), lm_get_num_threads()); }));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("simdEnabled", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Napi::Boolean::New(i.Env(), lm_simd_enabled() != 0); }));
  exports.Set("setSimd", Napi::Function::New(env, SetSimd));
  exports.Set("dataplanePriority", Napi::Function::New(env, DataplanePriority));
  exports.Set("forceDataplanePriorityRefusal", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
    lm::priority::force_refusal_for_testing(i[0].ToBoolean().Value());
  }));
  exports.Set("embedding", Napi::Function::New(env, Embedding));
  exports.Set("rmsnorm", Napi::Function::New(env, RmsNorm));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("ropeInvFreq", Napi::Function::New(env, RopeInvFreq));
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("kvCacheWrite", Napi::Function::New(env, KvCacheWrite));
  exports.Set("attention", Napi::Function::New(env, Attention));
  exports.Set("siluMul", Napi::Function::New(env, SiluMul));
  exports.Set("moeRoute", Napi::Function::New(env, MoeRoute));
  exports.Set("add", Napi::Function::New(env, Add));
  exports.Set("argmax", Napi::Function::New(env, Argmax));
  exports.Set("topk", Napi::Function::New(env, TopK));
  exports.Set("loraApply", Napi::Function::New(env, LoraApply));
  exports.Set("loraApplyMoe", Napi::Function::New(env, LoraApplyMoe));
  lm::register_step_binding(env, exports);
  register_shm_binding(env, exports);
  register_ucx_binding(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(loramesh_native, Init)
