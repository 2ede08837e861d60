// The native step: the forward pass that packages/engine/src/forward.ts used to orchestrate with one
// async native call per op. Same ops, same order, same buffers' contents, so the same bits.
// Built with -ffp-contract=off (CMakeLists.txt): the MoE combine must round the product and the
// sum separately, as the JavaScript path did.
#include "step.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <optional>
#include <string>

#include "common.h"
#include "ops.h"
#include "profile.h"
#include "threads.h"

namespace lm {

namespace {

lm_tensor view(const void* data, lm_dtype dtype, std::initializer_list<int64_t> shape) {
  lm_tensor t{};
  t.data = const_cast<void*>(data);
  t.dtype = dtype;
  t.device = LM_CPU;
  t.device_index = 0;
  t.ndim = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t d : shape) t.shape[i++] = d;
  return t;
}

lm_tensor f32v(const float* data, std::initializer_list<int64_t> shape) { return view(data, LM_F32, shape); }
lm_tensor i32v(const int32_t* data, std::initializer_list<int64_t> shape) { return view(data, LM_I32, shape); }

// Weight bytes a matmul reads (the profile's GB/s).
int64_t weight_bytes(const lm_tensor& w) { return numel(w) * static_cast<int64_t>(elem_size(w.dtype)); }

// Times one op into the profile's family (a no-op branch unless LORAMESH_STEP_PROFILE=1).
#define STEP_OP(family, bytes, expr)                  \
  do {                                                \
    profile::Scope _scope(profile::family, (bytes));  \
    STEP_TRY(expr);                                   \
  } while (0)

#define STEP_TRY(expr)            \
  do {                            \
    lm_status _s = (expr);        \
    if (_s != LM_OK) return _s;   \
  } while (0)

// The step's state: scratch buffers and the LoRA site runner.
class Step {
 public:
  Step(const StepModel& m, const StepBatch& b, SiteBackend* backend, StepPhase* phase)
      : m_(m), b_(b), backend_(backend), phase_(phase) {}

  lm_status run();

 private:
  // One LoRA site: post the rows, run the base projection, wait, add the delta. Without adapters in
  // the step it is just the base projection.
  template <typename Base>
  lm_status site(int32_t layer, SiteId id, const lm_tensor& x, lm_tensor& y, Base base, const int32_t* row_adapter,
                 const int32_t* row_expert) {
    if (!use_lora_) return base();
    const int64_t rows = y.shape[0], out = y.shape[1];
    SiteCall call{layer, id, static_cast<const float*>(x.data), rows, x.shape[1], out, row_adapter, row_expert,
                  nullptr};
    // In-process kernels (cpu::lora_fuse(), on by default): the shrink inside the base matmul's pool job, the
    // expand adding into y: one fork/join fewer a site, no delta buffer and no separate add.
    cpu::LoraJob job;
    lm_status planned = LM_OK;
    if (backend_->plan_fused(call, static_cast<float*>(y.data), &job, &planned)) {
      if (planned != LM_OK) return site_failed(planned);
      const std::function<void(int64_t)> shrink = [&job](int64_t i) { job.shrink(i); };
      // At one token the expand runs in the same job too, on each run of base rows as it is done.
      const std::function<void(int64_t, int64_t)> expand = [&job](int64_t c0, int64_t c1) { job.expand_columns(c0, c1); };
      // Or (cpu::lora_span(), one token) in a few long spans of B in that job, added to y after it.
      const std::function<void(int64_t)> span = [&job](int64_t i) { job.span(i); };
      lm_status base_status;
      bool expanded = false, spanned = false;
      {
        const bool fuse_expand = cpu::lora_fuse_expand() && job.shrink_count() > 0;
        cpu::MatmulExtra extra(job.shrink_count(), shrink, fuse_expand ? &expand : nullptr);
        if (fuse_expand && job.span_count() > 0) extra.set_spans(job.span_count(), &span);
        if (profile::enabled()) extra.set_bytes(job.shrink_bytes(), job.expand_bytes());
        base_status = base();
        if (base_status == LM_OK && !extra.ran()) job.run_shrink();  // a base that is no cpu::matmul
        expanded = extra.after_ran();
        spanned = extra.spans_ran();
      }
      if (base_status != LM_OK) return base_status;
      if (expanded) return LM_OK;
      if (spanned) {
        job.add_spans();
        return LM_OK;
      }
      profile::Scope scope(profile::kSite);
      job.run_expand();
      return LM_OK;
    }
    delta_.resize(static_cast<size_t>(rows * out));
    call.delta = delta_.data();
    uint64_t ticket = 0;
    lm_status s = backend_->post(call, &ticket);
    if (s != LM_OK) return site_failed(s);
    const lm_status base_status = base();
    if (base_status != LM_OK) {
      // The base's error is the one reported; the backend still gets its wait (end_step cancels).
      std::string message = lm_last_error();
      (void)backend_->wait(ticket, b_.site_timeout_us);
      return fail(base_status, message);
    }
    profile::Scope scope(profile::kSite, profile::enabled() ? backend_->site_bytes(call) : 0);
    s = backend_->wait(ticket, b_.site_timeout_us);
    if (s != LM_OK) return site_failed(s);
    lm_tensor delta = f32v(delta_.data(), {rows, out});
    return lm_add(&y, &delta);
  }

  lm_status site_failed(lm_status s) {
    *phase_ = StepPhase::kSite;
    return s;
  }

  lm_status layer(int32_t l);
  lm_status moe(int32_t l, const lm_tensor& x);
  lm_status logits();

  const StepModel& m_;
  const StepBatch& b_;
  SiteBackend* backend_;
  StepPhase* phase_;
  bool use_lora_ = false;
  int64_t T_ = 0, q_dim_ = 0, kv_dim_ = 0;
  std::vector<float> h_, x_, qkv_, q_, k_, v_, attn_, o_, gu_, act_, delta_;
  lm_tensor ids_{}, pos_{}, seq_{}, slots_{}, tables_{}, inv_freq_{};
};

lm_status Step::run() {
  *phase_ = StepPhase::kOp;
  T_ = b_.tokens;
  if (T_ == 0) return LM_OK;
  const int64_t H = m_.hidden;
  q_dim_ = m_.heads * m_.head_dim;
  kv_dim_ = m_.kv_heads * m_.head_dim;
  h_.assign(T_ * H, 0.f);
  x_.assign(T_ * H, 0.f);
  qkv_.assign(T_ * (q_dim_ + 2 * kv_dim_), 0.f);
  q_.assign(T_ * q_dim_, 0.f);
  k_.assign(T_ * kv_dim_, 0.f);
  v_.assign(T_ * kv_dim_, 0.f);
  attn_.assign(T_ * q_dim_, 0.f);
  o_.assign(T_ * H, 0.f);
  ids_ = i32v(b_.ids, {T_});
  pos_ = i32v(b_.positions, {T_});
  seq_ = i32v(b_.token_seq, {T_});
  slots_ = i32v(b_.slots, {T_});
  tables_ = i32v(b_.block_tables, {b_.seqs, b_.max_blocks});
  inv_freq_ = f32v(b_.inv_freq ? b_.inv_freq : m_.inv_freq.data(), {m_.rotary_dim / 2});

  lm_tensor h = f32v(h_.data(), {T_, H});
  STEP_OP(kEmbed, 0, lm_embedding(&m_.embed, &ids_, &h));

  use_lora_ = backend_ != nullptr && b_.n_adapters > 0;
  if (use_lora_) {
    const lm_status s = backend_->begin_step(b_.adapter_ids, b_.n_adapters);
    if (s != LM_OK) {
      *phase_ = StepPhase::kBeginStep;
      return s;
    }
  }
  // A same-host LoRA server computes on this host's cores during the step: leave it one (on 2 cores
  // the step thread then does the base work alone, and no pool thread spins on the server's core).
  std::optional<ThreadLimit> leave_core;
  if (use_lora_ && backend_->peer_shares_cores()) leave_core.emplace(num_threads() - 1);
  lm_status s = LM_OK;
  for (int32_t l = 0; l < static_cast<int32_t>(m_.layers.size()) && s == LM_OK; l++) s = layer(l);
  if (use_lora_) backend_->end_step();
  if (s != LM_OK) return s;
  *phase_ = StepPhase::kOp;
  return logits();
}

lm_status Step::layer(int32_t l) {
  const StepLayer& L = m_.layers[l];
  const int64_t H = m_.hidden, hd = m_.head_dim, width = q_dim_ + 2 * kv_dim_;
  lm_tensor h = f32v(h_.data(), {T_, H}), x = f32v(x_.data(), {T_, H});
  lm_tensor qkv = f32v(qkv_.data(), {T_, width});
  lm_tensor q = f32v(q_.data(), {T_, m_.heads, hd}), k = f32v(k_.data(), {T_, m_.kv_heads, hd}),
            v = f32v(v_.data(), {T_, m_.kv_heads, hd});
  lm_tensor attn = f32v(attn_.data(), {T_, q_dim_}), o = f32v(o_.data(), {T_, H});
  const lm_tensor* bias = L.qkv_bias.data ? &L.qkv_bias : nullptr;

  STEP_OP(kNorm, 0, lm_rmsnorm(&h, &L.input_norm, m_.eps, &x));
  STEP_TRY(site(l, kSiteQkv, x, qkv, [&] {
    profile::Scope scope(profile::kQkv, weight_bytes(L.qkv));
    return lm_matmul(&x, &L.qkv, bias, &qkv);
  }, b_.row_adapter, nullptr));
  for (int64_t t = 0; t < T_; t++) {
    const float* row = qkv_.data() + t * width;
    std::memcpy(q_.data() + t * q_dim_, row, sizeof(float) * q_dim_);
    std::memcpy(k_.data() + t * kv_dim_, row + q_dim_, sizeof(float) * kv_dim_);
    std::memcpy(v_.data() + t * kv_dim_, row + q_dim_ + kv_dim_, sizeof(float) * kv_dim_);
  }
  STEP_OP(kRope, 0, lm_rope(&q, &pos_, &inv_freq_, m_.rotary_dim, b_.attention_scaling));
  STEP_OP(kRope, 0, lm_rope(&k, &pos_, &inv_freq_, m_.rotary_dim, b_.attention_scaling));
  lm_tensor kc = L.k_cache, vc = L.v_cache;
  STEP_OP(kKvWrite, 0, lm_kv_cache_write(&k, &v, &kc, &vc, &slots_));
  // Same float as the JavaScript path's 1 / Math.sqrt(hd), rounded once to f32.
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(hd)));
  STEP_OP(kAttention, 0, lm_attention(&q, &kc, &vc, &tables_, &seq_, &pos_, scale, L.sliding_window, &attn));
  STEP_TRY(site(l, kSiteO, attn, o, [&] {
    profile::Scope scope(profile::kO, weight_bytes(L.o));
    return lm_matmul(&attn, &L.o, nullptr, &o);
  }, b_.row_adapter, nullptr));
  STEP_OP(kAdd, 0, lm_add(&h, &o));

  STEP_OP(kNorm, 0, lm_rmsnorm(&h, &L.post_norm, m_.eps, &x));
  if (L.moe) return moe(l, x);
  const int64_t I = m_.intermediate;
  gu_.assign(T_ * 2 * I, 0.f);
  act_.assign(T_ * I, 0.f);
  lm_tensor gu = f32v(gu_.data(), {T_, 2 * I}), act = f32v(act_.data(), {T_, I});
  STEP_TRY(site(l, kSiteGateUp, x, gu, [&] {
                  profile::Scope scope(profile::kGateUp, weight_bytes(L.gate_up));
                  return lm_matmul(&x, &L.gate_up, nullptr, &gu);
                }, b_.row_adapter,
                nullptr));
  STEP_OP(kSiluMul, 0, lm_silu_mul(&gu, &act));
  STEP_TRY(site(l, kSiteDown, act, o, [&] {
    profile::Scope scope(profile::kDown, weight_bytes(L.down));
    return lm_matmul(&act, &L.down, nullptr, &o);
  }, b_.row_adapter, nullptr));
  profile::Scope scope(profile::kAdd);
  return lm_add(&h, &o);
}

// Mixtral's sparse MoE block: route, run each expert on its rows (grouped by expert, tokens
// ascending), LoRA keyed by (adapter, expert), then the weighted sum per token in expert order.
lm_status Step::moe(int32_t l, const lm_tensor& x) {
  const StepLayer& L = m_.layers[l];
  const int64_t H = m_.hidden, I = m_.intermediate, E = m_.experts, K = m_.top_k;
  std::vector<float> router_logits(T_ * E), weights(T_ * K);
  std::vector<int32_t> experts(T_ * K);
  lm_tensor rl = f32v(router_logits.data(), {T_, E});
  STEP_TRY(lm_matmul(&x, &L.router, nullptr, &rl));
  lm_tensor ex = i32v(experts.data(), {T_, K}), wt = f32v(weights.data(), {T_, K});
  STEP_TRY(lm_moe_route(&rl, static_cast<int32_t>(K), 1, &ex, &wt));

  std::vector<int32_t> row_token, row_expert, row_adapter;
  std::vector<float> row_weight;
  std::vector<int64_t> start(E + 1, 0);
  for (int64_t e = 0; e < E; e++) {
    start[e] = static_cast<int64_t>(row_token.size());
    for (int64_t t = 0; t < T_; t++) {
      for (int64_t j = 0; j < K; j++) {
        if (experts[t * K + j] != e) continue;
        row_token.push_back(static_cast<int32_t>(t));
        row_expert.push_back(static_cast<int32_t>(e));
        row_weight.push_back(weights[t * K + j]);
        row_adapter.push_back(b_.row_adapter ? b_.row_adapter[t] : -1);
      }
    }
  }
  const int64_t R = static_cast<int64_t>(row_token.size());
  start[E] = R;
  std::vector<float> xr(R * H), gu(R * 2 * I), act(R * I), down(R * H);
  const auto* xd = static_cast<const float*>(x.data);
  for (int64_t r = 0; r < R; r++) std::memcpy(&xr[r * H], xd + row_token[r] * H, sizeof(float) * H);

  // The base projection of every expert on its contiguous block of rows.
  auto per_expert = [&](const std::vector<float>& in, std::vector<float>& out, int64_t width, int64_t out_width,
                        const std::vector<lm_tensor>& w) -> lm_status {
    for (int64_t e = 0; e < E; e++) {
      const int64_t n = start[e + 1] - start[e];
      if (n == 0) continue;
      lm_tensor xi = f32v(in.data() + start[e] * width, {n, width});
      lm_tensor yo = f32v(out.data() + start[e] * out_width, {n, out_width});
      STEP_TRY(lm_matmul(&xi, &w[e], nullptr, &yo));
    }
    return LM_OK;
  };
  lm_tensor xr_t = f32v(xr.data(), {R, H}), gu_t = f32v(gu.data(), {R, 2 * I}), act_t = f32v(act.data(), {R, I}),
            down_t = f32v(down.data(), {R, H});
  STEP_TRY(site(l, kSiteGateUp, xr_t, gu_t, [&] { return per_expert(xr, gu, H, 2 * I, L.expert_gate_up); },
                row_adapter.data(), row_expert.data()));
  STEP_TRY(lm_silu_mul(&gu_t, &act_t));
  STEP_TRY(site(l, kSiteDown, act_t, down_t, [&] { return per_expert(act, down, I, H, L.expert_down); },
                row_adapter.data(), row_expert.data()));
  std::vector<float> combined(T_ * H, 0.f);
  for (int64_t r = 0; r < R; r++) {
    const int64_t t = row_token[r];
    const float w = row_weight[r];
    float* c = &combined[t * H];
    const float* d = &down[r * H];
    for (int64_t i = 0; i < H; i++) {
      const float product = d[i] * w;  // rounded on its own: no fused multiply-add here
      c[i] = c[i] + product;
    }
  }
  lm_tensor h = f32v(h_.data(), {T_, H}), comb = f32v(combined.data(), {T_, H});
  return lm_add(&h, &comb);
}

lm_status Step::logits() {
  const int64_t n = b_.n_logit_rows, H = m_.hidden;
  if (n == 0) return LM_OK;
  std::vector<float> picked(n * H);
  for (int64_t i = 0; i < n; i++) {
    const int64_t r = b_.logit_rows[i];
    if (r < 0 || r >= T_) return fail(LM_ERR_SLOT, "step: logit row " + std::to_string(r) + " is outside the batch");
    std::memcpy(&picked[i * H], &h_[r * H], sizeof(float) * H);
  }
  lm_tensor p = f32v(picked.data(), {n, H});
  STEP_OP(kNorm, 0, lm_rmsnorm(&p, &m_.final_norm, m_.eps, &p));
  lm_tensor out = f32v(b_.logits, {n, m_.vocab});
  profile::Scope scope(profile::kLmHead, weight_bytes(m_.lm_head));
  return lm_matmul(&p, &m_.lm_head, nullptr, &out);
}

}  // namespace

lm_status run_step(const StepModel& model, const StepBatch& batch, SiteBackend* backend, StepPhase* phase) {
  StepPhase ignored;
  StepPhase* where = phase ? phase : &ignored;
  if (batch.n_adapters > 0 && backend == nullptr) {
    *where = StepPhase::kBeginStep;
    return fail(LM_ERR_ARGUMENT, "step: rows use adapters but no LoRA site backend was given");
  }
  Step step(model, batch, backend, where);
  int variant = 0;
  if (batch.tokens == 1 && cpu::alternating()) {
    // Same-process comparison of two variants of an op (ops.h): switch every step.
    static std::atomic<int> flips{0};
    variant = (flips.fetch_add(1) + 1) & 1;
    cpu::set_variant(variant);
  }
  // Steps with adapters get their own profile tables (a base/adapter comparison in one process).
  profile::set_variant(variant | (batch.n_adapters > 0 ? 2 : 0));
  profile::set_step_tokens(batch.tokens);
  lm_status s;
  {
    profile::Scope scope(profile::kStep);
    s = step.run();
  }
  profile::set_step_tokens(0);
  if (s == LM_OK) *where = StepPhase::kNone;
  return s;
}

}  // namespace lm
