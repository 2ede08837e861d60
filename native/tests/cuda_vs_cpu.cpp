// Compares every CUDA op with the CPU path on random inputs (odd sizes, f32 and bf16 storage), and
// checks that the CUDA LoRA kernel is bitwise deterministic. Needs no Node. Exits 77 (CTest: skipped)
// when no CUDA device is visible.
#include <cstring>
#include <functional>
#include <string>

#include "test_util.h"

using namespace lmtest;

namespace {

int failures = 0;

// Device copy of a host vector, freed at scope exit.
struct Dev {
  void* ptr = nullptr;
  size_t bytes = 0;
  template <typename T>
  explicit Dev(const std::vector<T>& host) : bytes(host.size() * sizeof(T)) {
    LM_CHECK(lm_cuda_malloc(0, bytes ? bytes : 1, &ptr));
    if (bytes) LM_CHECK(lm_cuda_memcpy_h2d(0, ptr, host.data(), bytes));
  }
  ~Dev() { lm_cuda_free(0, ptr); }
  template <typename T>
  std::vector<T> get() const {
    std::vector<T> out(bytes / sizeof(T));
    LM_CHECK(lm_cuda_synchronize(0));
    if (bytes) LM_CHECK(lm_cuda_memcpy_d2h(0, out.data(), ptr, bytes));
    return out;
  }
};

lm_tensor dt(const Dev& d, lm_dtype dtype, std::initializer_list<int64_t> shape) {
  return tensor(d.ptr, dtype, shape, LM_CUDA);
}

void report(const std::string& name, const std::vector<float>& cpu, const std::vector<float>& gpu, double tol) {
  double worst = 0, ref = 0;
  for (size_t i = 0; i < cpu.size(); i++) {
    worst = std::max(worst, static_cast<double>(std::fabs(cpu[i] - gpu[i])));
    ref = std::max(ref, static_cast<double>(std::fabs(cpu[i])));
  }
  const bool ok = cpu.size() == gpu.size() && worst <= tol * std::max(1.0, ref);
  std::printf("%-28s max|cpu-gpu| = %.3g (scale %.3g) %s\n", name.c_str(), worst, ref, ok ? "ok" : "FAIL");
  if (!ok) failures++;
}

void report_ints(const std::string& name, const std::vector<int32_t>& cpu, const std::vector<int32_t>& gpu) {
  const bool ok = cpu == gpu;
  std::printf("%-28s %s\n", name.c_str(), ok ? "identical" : "DIFFERENT");
  if (!ok) failures++;
}

std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); i++) out[i] = bf16(v[i]);
  return out;
}

}  // namespace

int main() {
  if (lm_cuda_device_count() == 0) {
    std::printf("no CUDA device: skipped\n");
    return 77;
  }
  std::mt19937 rng(11);
  const int64_t T = 37, H = 203, V = 517, N = 75;

  {  // embedding, f32 and bf16 tables
    auto table = random_floats(rng, V * H);
    std::vector<int32_t> ids;
    for (int64_t t = 0; t < T; t++) ids.push_back(static_cast<int32_t>((t * 97) % V));
    for (lm_dtype dtype : {LM_F32, LM_BF16}) {
      std::vector<float> out(T * H);
      auto tb = to_bf16(table);
      void* host = dtype == LM_F32 ? static_cast<void*>(table.data()) : static_cast<void*>(tb.data());
      lm_tensor ht = tensor(host, dtype, {V, H}), hi = tensor(ids.data(), LM_I32, {T}), ho = tensor(out.data(), LM_F32, {T, H});
      LM_CHECK(lm_embedding(&ht, &hi, &ho));
      Dev dtab = dtype == LM_F32 ? Dev(table) : Dev(tb), dids(ids), dout(out);
      lm_tensor a = dt(dtab, dtype, {V, H}), b = dt(dids, LM_I32, {T}), c = dt(dout, LM_F32, {T, H});
      LM_CHECK(lm_embedding(&a, &b, &c));
      report(std::string("embedding ") + (dtype == LM_F32 ? "f32" : "bf16"), out, dout.get<float>(), 0);
    }
  }
  {  // rmsnorm
    auto x = random_floats(rng, T * H), w = random_floats(rng, H);
    std::vector<float> out(T * H);
    lm_tensor hx = tensor(x.data(), LM_F32, {T, H}), hw = tensor(w.data(), LM_F32, {H}), ho = tensor(out.data(), LM_F32, {T, H});
    LM_CHECK(lm_rmsnorm(&hx, &hw, 1e-5f, &ho));
    Dev dx(x), dw(w), dout(out);
    lm_tensor a = dt(dx, LM_F32, {T, H}), b = dt(dw, LM_F32, {H}), c = dt(dout, LM_F32, {T, H});
    LM_CHECK(lm_rmsnorm(&a, &b, 1e-5f, &c));
    report("rmsnorm", out, dout.get<float>(), 1e-5);
  }
  {  // rope with yarn frequencies
    const int64_t heads = 5, hd = 64;
    lm_rope_config cfg{};
    cfg.type = LM_ROPE_YARN;
    cfg.base = 10000;
    cfg.rotary_dim = 64;
    cfg.factor = 4;
    cfg.max_position_embeddings = 4096;
    cfg.truncate = 1;
    std::vector<float> inv(32);
    float attn = 0;
    LM_CHECK(lm_rope_inv_freq(&cfg, 0, inv.data(), &attn));
    auto x = random_floats(rng, T * heads * hd);
    std::vector<int32_t> pos;
    for (int64_t t = 0; t < T; t++) pos.push_back(static_cast<int32_t>(t * 13));
    Dev dx(x), dp(pos), di(inv);
    lm_tensor hx = tensor(x.data(), LM_F32, {T, heads, hd}), hp = tensor(pos.data(), LM_I32, {T}), hi = tensor(inv.data(), LM_F32, {32});
    LM_CHECK(lm_rope(&hx, &hp, &hi, 64, attn));
    lm_tensor a = dt(dx, LM_F32, {T, heads, hd}), b = dt(dp, LM_I32, {T}), c = dt(di, LM_F32, {32});
    LM_CHECK(lm_rope(&a, &b, &c, 64, attn));
    report("rope (yarn)", x, dx.get<float>(), 1e-5);
  }
  for (lm_dtype dtype : {LM_F32, LM_BF16}) {  // matmul with bias
    auto x = random_floats(rng, T * H), w = random_floats(rng, N * H), bias = random_floats(rng, N);
    auto wb = to_bf16(w);
    std::vector<float> out(T * N);
    void* hwp = dtype == LM_F32 ? static_cast<void*>(w.data()) : static_cast<void*>(wb.data());
    lm_tensor hx = tensor(x.data(), LM_F32, {T, H}), hw = tensor(hwp, dtype, {N, H}), hb = tensor(bias.data(), LM_F32, {N}), ho = tensor(out.data(), LM_F32, {T, N});
    LM_CHECK(lm_matmul(&hx, &hw, &hb, &ho));
    Dev dx(x), dw = dtype == LM_F32 ? Dev(w) : Dev(wb), db(bias), dout(out);
    lm_tensor a = dt(dx, LM_F32, {T, H}), b = dt(dw, dtype, {N, H}), c = dt(db, LM_F32, {N}), d = dt(dout, LM_F32, {T, N});
    LM_CHECK(lm_matmul(&a, &b, &c, &d));
    report(std::string("matmul ") + (dtype == LM_F32 ? "f32" : "bf16"), out, dout.get<float>(), 1e-5);
  }
  {  // kv cache write + attention over a paged cache, mixed prefill/decode, GQA, sliding window
    const int64_t heads = 4, kvh = 2, hd = 16, bs = 4, blocks = 16, seqs = 3, maxb = 5;
    std::vector<int32_t> tables = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14};
    std::vector<int32_t> seq, pos, slots;
    const int lens[3] = {17, 1, 9};
    for (int s = 0; s < 3; s++) {
      for (int p = 0; p < lens[s]; p++) {
        seq.push_back(s);
        pos.push_back(p);
        slots.push_back(tables[static_cast<size_t>(s * maxb + p / bs)] * bs + p % bs);
      }
    }
    const int64_t tok = static_cast<int64_t>(seq.size());
    auto k = random_floats(rng, tok * kvh * hd), v = random_floats(rng, tok * kvh * hd), q = random_floats(rng, tok * heads * hd);
    for (int32_t window : {0, 5}) {
      std::vector<float> kc(blocks * bs * kvh * hd, 0.0f), vc = kc, out(tok * heads * hd);
      lm_tensor hk = tensor(k.data(), LM_F32, {tok, kvh, hd}), hv = tensor(v.data(), LM_F32, {tok, kvh, hd});
      lm_tensor hkc = tensor(kc.data(), LM_F32, {blocks, bs, kvh, hd}), hvc = tensor(vc.data(), LM_F32, {blocks, bs, kvh, hd});
      lm_tensor hs = tensor(slots.data(), LM_I32, {tok}), hq = tensor(q.data(), LM_F32, {tok, heads, hd});
      lm_tensor ht = tensor(tables.data(), LM_I32, {seqs, maxb}), hseq = tensor(seq.data(), LM_I32, {tok}), hpos = tensor(pos.data(), LM_I32, {tok});
      lm_tensor ho = tensor(out.data(), LM_F32, {tok, heads * hd});
      LM_CHECK(lm_kv_cache_write(&hk, &hv, &hkc, &hvc, &hs));
      LM_CHECK(lm_attention(&hq, &hkc, &hvc, &ht, &hseq, &hpos, 0.25f, window, &ho));
      std::vector<float> zero(kc.size(), 0.0f);
      Dev dk(k), dv(v), dkc(zero), dvc(zero), ds(slots), dq(q), dtab(tables), dseq(seq), dpos(pos), dout(out);
      lm_tensor a = dt(dk, LM_F32, {tok, kvh, hd}), b = dt(dv, LM_F32, {tok, kvh, hd}), c = dt(dkc, LM_F32, {blocks, bs, kvh, hd}), d = dt(dvc, LM_F32, {blocks, bs, kvh, hd});
      lm_tensor e = dt(ds, LM_I32, {tok}), f = dt(dq, LM_F32, {tok, heads, hd}), g = dt(dtab, LM_I32, {seqs, maxb}), h = dt(dseq, LM_I32, {tok}), i = dt(dpos, LM_I32, {tok}), j = dt(dout, LM_F32, {tok, heads * hd});
      LM_CHECK(lm_kv_cache_write(&a, &b, &c, &d, &e));
      LM_CHECK(lm_attention(&f, &c, &d, &g, &h, &i, 0.25f, window, &j));
      report("attention window=" + std::to_string(window), out, dout.get<float>(), 1e-5);
    }
  }
  {  // silu_mul, add, moe_route, argmax, topk
    const int64_t I = 97, E = 8, K = 2;
    auto gu = random_floats(rng, T * 2 * I);
    std::vector<float> out(T * I);
    lm_tensor hg = tensor(gu.data(), LM_F32, {T, 2 * I}), ho = tensor(out.data(), LM_F32, {T, I});
    LM_CHECK(lm_silu_mul(&hg, &ho));
    Dev dg(gu), dout(out);
    lm_tensor a = dt(dg, LM_F32, {T, 2 * I}), b = dt(dout, LM_F32, {T, I});
    LM_CHECK(lm_silu_mul(&a, &b));
    report("silu_mul", out, dout.get<float>(), 1e-6);

    auto x = random_floats(rng, T * I), y = random_floats(rng, T * I);
    Dev dx(x), dy(y);
    lm_tensor hx = tensor(x.data(), LM_F32, {T, I}), hy = tensor(y.data(), LM_F32, {T, I});
    LM_CHECK(lm_add(&hx, &hy));
    lm_tensor c = dt(dx, LM_F32, {T, I}), d = dt(dy, LM_F32, {T, I});
    LM_CHECK(lm_add(&c, &d));
    report("add", x, dx.get<float>(), 0);

    auto logits = random_floats(rng, T * E);
    std::vector<int32_t> ex(T * K);
    std::vector<float> wt(T * K);
    lm_tensor hl = tensor(logits.data(), LM_F32, {T, E}), he = tensor(ex.data(), LM_I32, {T, K}), hw = tensor(wt.data(), LM_F32, {T, K});
    LM_CHECK(lm_moe_route(&hl, K, 1, &he, &hw));
    Dev dl(logits), de(ex), dw(wt);
    lm_tensor e = dt(dl, LM_F32, {T, E}), f = dt(de, LM_I32, {T, K}), g = dt(dw, LM_F32, {T, K});
    LM_CHECK(lm_moe_route(&e, K, 1, &f, &g));
    report_ints("moe_route experts", ex, de.get<int32_t>());
    report("moe_route weights", wt, dw.get<float>(), 1e-6);

    auto big = random_floats(rng, 3 * V);
    std::vector<int32_t> am(3), idx(3 * 7);
    std::vector<float> vals(3 * 7);
    lm_tensor hbig = tensor(big.data(), LM_F32, {3, V}), ham = tensor(am.data(), LM_I32, {3});
    lm_tensor hidx = tensor(idx.data(), LM_I32, {3, 7}), hval = tensor(vals.data(), LM_F32, {3, 7});
    LM_CHECK(lm_argmax(&hbig, &ham));
    LM_CHECK(lm_topk(&hbig, 7, &hidx, &hval));
    Dev dbig(big), dam(am), didx(idx), dval(vals);
    lm_tensor i1 = dt(dbig, LM_F32, {3, V}), i2 = dt(dam, LM_I32, {3}), i3 = dt(didx, LM_I32, {3, 7}), i4 = dt(dval, LM_F32, {3, 7});
    LM_CHECK(lm_argmax(&i1, &i2));
    LM_CHECK(lm_topk(&i1, 7, &i3, &i4));
    report_ints("argmax", am, dam.get<int32_t>());
    report_ints("topk indices", idx, didx.get<int32_t>());
  }
  for (lm_dtype wdtype : {LM_F32, LM_BF16}) {  // batched LoRA: mixed ranks, 3 slices, tokens without adapter
    LoraProblem p = make_lora_problem(rng, 61, 257, {128, 40, 40}, {1, 2, 4, 8, 16, 64, 128});
    if (wdtype == LM_BF16) {  // the CPU reference sees the same rounded weights
      for (float& v : p.a_pool) v = from_bf16(bf16(v));
      for (float& v : p.b_pool) v = from_bf16(bf16(v));
    }
    const int64_t entries = static_cast<int64_t>(p.rank.size());
    auto run = [&](lm_device device) {
      std::vector<uint16_t> ab = to_bf16(p.a_pool), bb = to_bf16(p.b_pool);
      const bool b16 = wdtype == LM_BF16;
      std::vector<float> y = p.y0;
      if (device == LM_CPU) {
        lm_tensor a = tensor(b16 ? static_cast<void*>(ab.data()) : p.a_pool.data(), wdtype, {static_cast<int64_t>(p.a_pool.size())});
        lm_tensor b = tensor(b16 ? static_cast<void*>(bb.data()) : p.b_pool.data(), wdtype, {static_cast<int64_t>(p.b_pool.size())});
        lm_tensor r = tensor(p.rank.data(), LM_I32, {entries}), s = tensor(p.scale.data(), LM_F32, {entries});
        lm_tensor ao = tensor(p.a_offset.data(), LM_I64, {entries}), bo = tensor(p.b_offset.data(), LM_I64, {entries});
        lm_lora_weights w{&a, &b, p.n_keys, p.n_slices, {}, &r, &s, &ao, &bo, p.max_rank, 0};
        std::memcpy(w.slice_width, p.widths, sizeof(p.widths));
        lm_tensor x = tensor(p.x.data(), LM_F32, {p.tokens, p.h_in}), sl = tensor(p.slot.data(), LM_I32, {p.tokens}), yt = tensor(y.data(), LM_F32, {p.tokens, p.n_out});
        LM_CHECK(lm_lora_apply(&w, &x, &sl, &yt));
        return y;
      }
      Dev da = b16 ? Dev(ab) : Dev(p.a_pool), db = b16 ? Dev(bb) : Dev(p.b_pool), dr(p.rank), ds(p.scale), dao(p.a_offset), dbo(p.b_offset), dx(p.x), dsl(p.slot), dy(y);
      lm_tensor a = dt(da, wdtype, {static_cast<int64_t>(p.a_pool.size())}), b = dt(db, wdtype, {static_cast<int64_t>(p.b_pool.size())});
      lm_tensor r = dt(dr, LM_I32, {entries}), s = dt(ds, LM_F32, {entries}), ao = dt(dao, LM_I64, {entries}), bo = dt(dbo, LM_I64, {entries});
      lm_lora_weights w{&a, &b, p.n_keys, p.n_slices, {}, &r, &s, &ao, &bo, p.max_rank, 0};
      std::memcpy(w.slice_width, p.widths, sizeof(p.widths));
      lm_tensor x = dt(dx, LM_F32, {p.tokens, p.h_in}), sl = dt(dsl, LM_I32, {p.tokens}), yt = dt(dy, LM_F32, {p.tokens, p.n_out});
      LM_CHECK(lm_lora_apply(&w, &x, &sl, &yt));
      return dy.get<float>();
    };
    std::vector<float> cpu = run(LM_CPU), gpu1 = run(LM_CUDA), gpu2 = run(LM_CUDA);
    report(std::string("lora mixed ranks ") + (wdtype == LM_F32 ? "f32" : "bf16"), cpu, gpu1, 1e-5);
    const bool same = std::memcmp(gpu1.data(), gpu2.data(), gpu1.size() * 4) == 0;
    std::printf("%-28s %s\n", "lora cuda deterministic", same ? "identical" : "DIFFERENT");
    if (!same) failures++;
  }
  std::printf("%s\n", failures ? "FAILED" : "all CUDA ops match the CPU path");
  return failures ? 1 : 0;
}
