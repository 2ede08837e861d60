// Self-test of the native step without Node: a small random dense model stepped through
// lm::run_step gives the same bits on 1 and 2 threads; every posted LoRA site is waited for, in
// layer order, with the step's rows; the local backend adds the kernel's delta, and refuses an
// adapter it does not hold at begin_step with a slot error. A backend whose peer shares this
// host's cores (a same-host ring) gets a step that keeps its parallel work on the step's thread
// (2 threads: the other core is the LoRA server's), with the same bits.
// A one-token step with bf16 adapters on every site through the local backend (the fused shrink
// and expand) gives the same bits on 1 and 2 threads, and applies the delta.
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "../src/gemm.h"
#include "../src/local_site_backend.h"
#include "../src/ops.h"
#include "../src/step.h"
#include "../src/threads.h"
#include "test_util.h"

using namespace lmtest;

namespace {

constexpr int64_t H = 32, NH = 4, NKV = 2, HD = 8, I = 48, V = 40, L = 2, BLOCKS = 4, BS = 4;

struct Weights {
  std::vector<std::vector<float>> store;
  float* make(std::mt19937& rng, size_t n, float scale = 0.2f, float offset = 0) {
    std::uniform_real_distribution<float> d(-scale, scale);
    store.emplace_back(n);
    for (auto& v : store.back()) v = offset + d(rng);
    return store.back().data();
  }
};

lm::StepModel make_model(std::mt19937& rng, Weights& w) {
  lm::StepModel m;
  m.hidden = H, m.heads = NH, m.kv_heads = NKV, m.head_dim = HD, m.intermediate = I, m.vocab = V;
  m.rotary_dim = HD;
  m.eps = 1e-5f;
  for (int i = 0; i < HD / 2; i++) m.inv_freq.push_back(std::pow(10000.f, -2.f * i / HD));
  m.embed = tensor(w.make(rng, V * H, 1.f), LM_F32, {V, H});
  m.final_norm = tensor(w.make(rng, H, 0.1f, 1.f), LM_F32, {H});
  m.lm_head = tensor(w.make(rng, V * H), LM_F32, {V, H});
  for (int l = 0; l < L; l++) {
    lm::StepLayer y;
    y.input_norm = tensor(w.make(rng, H, 0.1f, 1.f), LM_F32, {H});
    y.post_norm = tensor(w.make(rng, H, 0.1f, 1.f), LM_F32, {H});
    y.qkv = tensor(w.make(rng, (NH + 2 * NKV) * HD * H), LM_F32, {(NH + 2 * NKV) * HD, H});
    y.qkv_bias = tensor(w.make(rng, (NH + 2 * NKV) * HD), LM_F32, {(NH + 2 * NKV) * HD});
    y.o = tensor(w.make(rng, H * NH * HD), LM_F32, {H, NH * HD});
    y.gate_up = tensor(w.make(rng, 2 * I * H), LM_F32, {2 * I, H});
    y.down = tensor(w.make(rng, H * I), LM_F32, {H, I});
    y.sliding_window = l == 1 ? 3 : 0;
    y.k_cache = tensor(w.make(rng, BLOCKS * BS * NKV * HD, 0), LM_F32, {BLOCKS, BS, NKV, HD});
    y.v_cache = tensor(w.make(rng, BLOCKS * BS * NKV * HD, 0), LM_F32, {BLOCKS, BS, NKV, HD});
    m.layers.push_back(y);
  }
  return m;
}

// Two sequences: a 5-token prefill (adapter 0) and a 2-token chunk (no adapter).
struct Batch {
  std::vector<int32_t> ids{3, 7, 11, 2, 9, 5, 1}, pos{0, 1, 2, 3, 4, 0, 1}, seq{0, 0, 0, 0, 0, 1, 1};
  std::vector<int32_t> slots{0, 1, 2, 3, 4, 8, 9}, tables{0, 1, 2, 0}, rows{0, 4, 6}, adapter{0, 0, 0, 0, 0, -1, -1};
  std::vector<float> logits = std::vector<float>(3 * V);
  const char* ids_str[1] = {"a"};
  lm::StepBatch get(int n_adapters) {
    lm::StepBatch b;
    b.tokens = 7, b.seqs = 2, b.max_blocks = 2;
    b.ids = ids.data(), b.positions = pos.data(), b.token_seq = seq.data(), b.slots = slots.data();
    b.block_tables = tables.data(), b.row_adapter = adapter.data(), b.adapter_ids = ids_str;
    b.n_adapters = n_adapters, b.logit_rows = rows.data(), b.n_logit_rows = 3, b.logits = logits.data();
    return b;
  }
};

// Records the order of calls and writes a delta of 0.5 on adapter rows.
class Recorder : public lm::SiteBackend {
 public:
  std::string log;
  int open = 0;
  lm_status begin_step(const char* const*, int32_t n) override {
    log += "begin" + std::to_string(n) + ";";
    return LM_OK;
  }
  lm_status post(const lm::SiteCall& c, uint64_t* t) override {
    calls.push_back(c);
    *t = calls.size() - 1;
    open++;
    log += std::to_string(c.layer) + "/" + std::to_string(c.site) + ";";
    return LM_OK;
  }
  lm_status wait(uint64_t t, int64_t) override {
    const lm::SiteCall& c = calls[t];
    for (int64_t r = 0; r < c.rows; r++)
      for (int64_t n = 0; n < c.out_features; n++) c.delta[r * c.out_features + n] = c.row_adapter[r] >= 0 ? 0.5f : 0.f;
    open--;
    return LM_OK;
  }
  void end_step() override { log += "end"; }
  std::vector<lm::SiteCall> calls;
};

// A Recorder whose remote side "shares this host's cores"; each wait runs a parallel job (as the
// step's base matmuls do) and counts the indices that ran on a thread other than the step's.
class SharingRecorder : public Recorder {
 public:
  explicit SharingRecorder(bool shares) : shares_(shares) {}
  bool peer_shares_cores() const override { return shares_; }
  lm_status wait(uint64_t t, int64_t timeout_us) override {
    const std::thread::id step_thread = std::this_thread::get_id();
    lm::parallel_for(32, [&](int64_t) {
      if (std::this_thread::get_id() != step_thread) off_thread.fetch_add(1);
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
      while (std::chrono::steady_clock::now() < until) {
      }
    });
    return Recorder::wait(t, timeout_us);
  }
  std::atomic<int> off_thread{0};

 private:
  bool shares_;
};

}  // namespace

int main() {
  std::mt19937 rng(11);
  int failures = 0;
  Weights w;
  lm::StepModel model = make_model(rng, w);
  lm::StepPhase phase;

  std::vector<float> by_threads[2];
  for (int threads : {1, 2}) {
    LM_CHECK(lm_set_num_threads(threads));
    Batch b;
    LM_CHECK(lm::run_step(model, b.get(0), nullptr, &phase));
    by_threads[threads - 1] = b.logits;
  }
  const bool same = std::memcmp(by_threads[0].data(), by_threads[1].data(), by_threads[0].size() * 4) == 0;
  std::printf("step: 1 vs 2 threads identical: %s\n", same ? "yes" : "NO");
  if (!same) failures++;

  Recorder rec;
  Batch b;
  LM_CHECK(lm::run_step(model, b.get(1), &rec, &phase));
  const std::string want = "begin1;0/0;0/1;0/2;0/3;1/0;1/1;1/2;1/3;end";
  std::printf("step: site order %s\n", rec.log.c_str());
  if (rec.log != want || rec.open != 0) failures++;
  // The sequence without adapter is untouched by the delta: its logits match the base step.
  const bool base_row_same = std::memcmp(&b.logits[2 * V], &by_threads[1][2 * V], V * 4) == 0;
  const bool lora_row_differs = std::memcmp(&b.logits[0], &by_threads[1][0], V * 4) != 0;
  std::printf("step: rows without adapter unchanged %s, rows with adapter changed %s\n", base_row_same ? "yes" : "NO",
              lora_row_differs ? "yes" : "NO");
  if (!base_row_same || !lora_row_differs) failures++;

  // A ring-like backend: the step's parallel work stays on its thread, the bits stay the same.
  {
    LM_CHECK(lm_set_num_threads(2));
    SharingRecorder plain(false), sharing(true);
    Batch b1, b2;
    LM_CHECK(lm::run_step(model, b1.get(1), &plain, &phase));
    LM_CHECK(lm::run_step(model, b2.get(1), &sharing, &phase));
    const bool same_bits = std::memcmp(b1.logits.data(), b2.logits.data(), b1.logits.size() * 4) == 0;
    std::printf("step: peer shares cores: %d of its indices off the step thread (without: %d), same bits %s\n",
                sharing.off_thread.load(), plain.off_thread.load(), same_bits ? "yes" : "NO");
    if (sharing.off_thread.load() != 0 || !same_bits || sharing.log != want) failures++;
    // The limit ends with the step: the same job from this thread may use the pool again.
    std::atomic<int> after{0};
    const std::thread::id me = std::this_thread::get_id();
    for (int tries = 0; tries < 2000 && after.load() == 0; tries++)
      lm::parallel_for(32, [&](int64_t) {
        if (std::this_thread::get_id() != me) after.fetch_add(1);
        const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
        while (std::chrono::steady_clock::now() < until) {
        }
      });
    std::printf("step: after the step the pool helps again: %s\n", after.load() > 0 ? "yes" : "NO");
    if (after.load() == 0) failures++;
  }

  // The local backend refuses an adapter it does not hold before any site runs.
  lm::LocalSiteBackend local({"other"}, 0, std::vector<lm::PackedSite>(L * 4));
  LM_CHECK(local.validate());
  const lm_status s = lm::run_step(model, b.get(1), &local, &phase);
  std::printf("step: unknown adapter -> status %d in phase %d: %s\n", (int)s, (int)phase, lm_last_error());
  if (s != LM_ERR_SLOT || phase != lm::StepPhase::kBeginStep) failures++;

  // One token (the fused one-token path), bf16 r32 adapters on all four sites of both layers (r32:
  // the 16-row line tile's rows).
  {
    std::uniform_int_distribution<int> bits(0, 0x7f);
    auto bf16 = [&](size_t n) {
      std::vector<uint8_t> v(n * 2);
      for (size_t i = 0; i < n; i++) {
        const uint16_t u = static_cast<uint16_t>(0x3c00 | bits(rng) | (bits(rng) & 1 ? 0x8000 : 0));
        std::memcpy(&v[i * 2], &u, 2);
      }
      return v;
    };
    constexpr int32_t R = 32;
    const int64_t in[4] = {H, NH * HD, H, I};
    const std::vector<std::vector<int32_t>> widths = {{NH * HD, NKV * HD, NKV * HD}, {H}, {I, I}, {H}};
    std::vector<lm::PackedSite> sites(L * 4);
    for (int l = 0; l < L; l++)
      for (int id = 0; id < 4; id++) {
        lm::PackedSite& s = sites[static_cast<size_t>(l * 4 + id)];
        const auto& wd = widths[static_cast<size_t>(id)];
        s.present = true;
        s.dtype = LM_BF16;
        s.n_keys = 1, s.n_slices = static_cast<int32_t>(wd.size()), s.max_rank = R;
        int64_t a_elems = 0, b_elems = 0;
        for (size_t sl = 0; sl < wd.size(); sl++) {
          s.slice_width[sl] = wd[sl];
          s.rank.push_back(R);
          s.scale.push_back(0.5f);
          s.a_offset.push_back(a_elems);
          s.b_offset.push_back(b_elems);
          a_elems += R * in[id];
          b_elems += int64_t(wd[sl]) * R;
        }
        s.a_pool = bf16(static_cast<size_t>(a_elems));
        s.b_pool = bf16(static_cast<size_t>(b_elems));
      }
    struct One {
      std::vector<int32_t> ids{3}, pos{0}, seq{0}, slots{0}, tables{0, 1}, rows{0}, adapter{0};
      std::vector<float> logits = std::vector<float>(V);
      const char* ids_str[1] = {"a"};
      lm::StepBatch get() {
        lm::StepBatch b;
        b.tokens = 1, b.seqs = 1, b.max_blocks = 2;
        b.ids = ids.data(), b.positions = pos.data(), b.token_seq = seq.data(), b.slots = slots.data();
        b.block_tables = tables.data(), b.row_adapter = adapter.data(), b.adapter_ids = ids_str;
        b.n_adapters = adapter[0] >= 0 ? 1 : 0, b.logit_rows = rows.data(), b.n_logit_rows = 1, b.logits = logits.data();
        return b;
      }
    };
    std::vector<float> got[2];  // [threads - 1]
    for (int threads : {1, 2}) {
      LM_CHECK(lm_set_num_threads(threads));
      lm::LocalSiteBackend backend({"a"}, 0, sites);
      LM_CHECK(backend.validate());
      One one;
      LM_CHECK(lm::run_step(model, one.get(), &backend, &phase));
      got[threads - 1] = one.logits;
    }
    // Two threads with the shrink in 16-rank items and the poll (LORAMESH_LORA_COARSE=0): the same
    // bits as whole-slice items with the expand deferred (the default, run above).
    std::vector<float> fine;
    {
      lm::cpu::set_lora_coarse(false);
      lm::LocalSiteBackend backend({"a"}, 0, sites);
      LM_CHECK(backend.validate());
      One one;
      LM_CHECK(lm::run_step(model, one.get(), &backend, &phase));
      fine = one.logits;
      lm::cpu::set_lora_coarse(true);
    }
    const bool same_items = std::memcmp(fine.data(), got[0].data(), V * 4) == 0;
    std::printf("step: one token, bf16 r32: whole-slice shrink / 16-rank items same bits %s\n",
                same_items ? "yes" : "NO");
    if (!same_items) failures++;
    // Two threads with the expand per run of base rows in the tile's old load order
    // (LORAMESH_LORA_SPAN=0 LORAMESH_LORA_EXPAND_GROUPED=0) against the spans of B in the grouped
    // order, added after the job (the default, run above).
    std::vector<float> per_run;
    {
      lm::cpu::set_lora_span(false);
      lm::gemm::set_expand_grouped(0);
      lm::LocalSiteBackend backend({"a"}, 0, sites);
      LM_CHECK(backend.validate());
      One one;
      LM_CHECK(lm::run_step(model, one.get(), &backend, &phase));
      per_run = one.logits;
      lm::cpu::set_lora_span(true);
      lm::gemm::set_expand_grouped(1);
    }
    const bool same_spans = std::memcmp(per_run.data(), got[0].data(), V * 4) == 0;
    std::printf("step: one token, bf16 r32: expand in spans / per run of base rows same bits %s\n",
                same_spans ? "yes" : "NO");
    if (!same_spans) failures++;
    One base;
    base.adapter[0] = -1;
    LM_CHECK(lm::run_step(model, base.get(), nullptr, &phase));
    const bool same = std::memcmp(got[1].data(), got[0].data(), V * 4) == 0;
    const bool applied = std::memcmp(got[0].data(), base.logits.data(), V * 4) != 0;
    std::printf("step: one token, bf16 r32 on every site: 1/2 threads same bits %s, delta applied %s\n",
                same ? "yes" : "NO", applied ? "yes" : "NO");
    if (!same || !applied) failures++;
  }

  std::printf("%s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
