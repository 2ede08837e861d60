// CPU self-test of the core without Node: batched mixed-rank LoRA against the fp64 oracle, bitwise
// identical results for 1 and 2 threads and for the AVX2 and scalar paths, and typed errors for bad
// inputs. The full op-by-op suite runs through the Node binding (pnpm test); this one exists so a
// machine without Node (the GPU machine) can check the core too.
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "../src/gemm.h"
#include "../src/ops.h"
#include "../src/simd.h"
#include "test_util.h"

using namespace lmtest;

// b_pool: null for p's own B ([width, rank]); else the same Bs k-major (b_transposed).
static std::vector<float> run_lora(const LoraProblem& p, const std::vector<float>* b_kmajor = nullptr) {
  std::vector<float> y = p.y0;
  const std::vector<float>& bp = b_kmajor ? *b_kmajor : p.b_pool;
  lm_tensor a = tensor(const_cast<float*>(p.a_pool.data()), LM_F32, {static_cast<int64_t>(p.a_pool.size())});
  lm_tensor b = tensor(const_cast<float*>(bp.data()), LM_F32, {static_cast<int64_t>(bp.size())});
  const int64_t entries = static_cast<int64_t>(p.rank.size());
  lm_tensor rank = tensor(const_cast<int32_t*>(p.rank.data()), LM_I32, {entries});
  lm_tensor scale = tensor(const_cast<float*>(p.scale.data()), LM_F32, {entries});
  lm_tensor ao = tensor(const_cast<int64_t*>(p.a_offset.data()), LM_I64, {entries});
  lm_tensor bo = tensor(const_cast<int64_t*>(p.b_offset.data()), LM_I64, {entries});
  lm_lora_weights w{&a, &b, p.n_keys, p.n_slices, {}, &rank, &scale, &ao, &bo, p.max_rank, b_kmajor ? 1 : 0};
  std::memcpy(w.slice_width, p.widths, sizeof(p.widths));
  lm_tensor x = tensor(const_cast<float*>(p.x.data()), LM_F32, {p.tokens, p.h_in});
  lm_tensor slot = tensor(const_cast<int32_t*>(p.slot.data()), LM_I32, {p.tokens});
  lm_tensor yt = tensor(y.data(), LM_F32, {p.tokens, p.n_out});
  LM_CHECK(lm_lora_apply(&w, &x, &slot, &yt));
  return y;
}

// B stored k-major (the native step's and the LoRA servers' pools): within 1e-4 of the oracle, the
// same bits for 1 and 2 threads, SIMD and scalar, and for a row alone (decode's streaming path) or in
// a batch (the register tiles); column tails; pools whose entries overlap are left as they are.
static int check_kmajor(std::mt19937& rng) {
  int failures = 0;
  const std::vector<LoraProblem> problems = {make_lora_problem(rng, 67, 131, {96, 32, 32}, {1, 2, 4, 8, 16, 64, 128}),
                                             make_lora_problem(rng, 9, 64, {37, 5}, {3, 16, 1})};
  for (const LoraProblem& p : problems) {
    std::vector<float> bt = p.b_pool;
    if (!lm::cpu::transpose_lora_b(bt.data(), LM_F32, static_cast<int64_t>(bt.size()), p.n_keys, p.n_slices, p.widths,
                                   p.rank.data(), p.b_offset.data())) {
      std::printf("lora k-major: transpose refused a valid pool\n");
      failures++;
      continue;
    }
    const std::vector<double> want = lora_oracle(p);
    std::vector<std::vector<float>> runs;
    for (int simd : {1, 0}) {
      if (simd && !lm_simd_enabled()) continue;
      LM_CHECK(lm_set_simd(simd));
      for (int threads : {1, 2}) {
        LM_CHECK(lm_set_num_threads(threads));
        runs.push_back(run_lora(p, &bt));
      }
    }
    LM_CHECK(lm_set_simd(1));
    double worst = 0;
    for (size_t i = 0; i < want.size(); i++) worst = std::max(worst, std::fabs(runs[0][i] - want[i]));
    bool same = true;
    for (const auto& r : runs) same = same && std::memcmp(r.data(), runs[0].data(), r.size() * 4) == 0;
    // Each row alone: decode's path.
    bool alone_same = true;
    for (int64_t t = 0; t < p.tokens; t++) {
      LoraProblem one = p;
      one.tokens = 1;
      one.x.assign(p.x.begin() + t * p.h_in, p.x.begin() + (t + 1) * p.h_in);
      one.y0.assign(p.y0.begin() + t * p.n_out, p.y0.begin() + (t + 1) * p.n_out);
      one.slot = {p.slot[static_cast<size_t>(t)]};
      const std::vector<float> y = run_lora(one, &bt);
      alone_same = alone_same && std::memcmp(y.data(), runs[0].data() + t * p.n_out, y.size() * 4) == 0;
    }
    std::printf("lora k-major B (%lld rows) max|err|=%.3g, threads/SIMD/scalar identical: %s, a row alone identical: %s\n",
                static_cast<long long>(p.tokens), worst, same ? "yes" : "NO", alone_same ? "yes" : "NO");
    if (worst > 1e-4 || !same || !alone_same) failures++;
  }
  // Two entries over the same bytes would be transposed twice: refused, pool untouched.
  const LoraProblem& p = problems[1];
  std::vector<int64_t> offsets = p.b_offset;
  offsets[1] = offsets[0];
  std::vector<float> bt = p.b_pool;
  const bool refused = !lm::cpu::transpose_lora_b(bt.data(), LM_F32, static_cast<int64_t>(bt.size()), p.n_keys,
                                                  p.n_slices, p.widths, p.rank.data(), offsets.data()) &&
                       bt == p.b_pool;
  std::printf("lora k-major: overlapping entries refused, pool untouched: %s\n", refused ? "yes" : "NO");
  if (!refused) failures++;
  return failures;
}

// Matmul on every path (AVX-512 tiles, AVX2, scalar) and thread count gives the same bits, for
// f32 and bf16 weights, token counts around the tile and widening sizes, rows and k with tails.
static int check_matmul(std::mt19937& rng) {
  int failures = 0;
  for (lm_dtype wd : {LM_F32, LM_BF16}) {
    // tokens 0 stands for one token at k = 2053: rows long enough for the decode GEMV's prefetch;
    // -1 for one token over 1003 rows of k = 520, which the shrinking decode chunks split many ways.
    for (int64_t case_tokens : {-1, 0, 1, 2, 3, 4, 5, 6, 7, 11, 13, 50, 64}) {
      const int64_t tokens = case_tokens <= 0 ? 1 : case_tokens;
      const int64_t k = case_tokens == 0 ? 2053 : case_tokens < 0 ? 520 : 203, n = case_tokens < 0 ? 1003 : 37;
      std::vector<float> x = random_floats(rng, static_cast<size_t>(tokens * k));
      std::vector<float> wf = random_floats(rng, static_cast<size_t>(n * k), 0.1f);
      std::vector<uint16_t> wb(wf.size());
      for (size_t i = 0; i < wf.size(); i++) wb[i] = bf16(wf[i]);
      std::vector<float> bias = random_floats(rng, static_cast<size_t>(n));
      std::vector<float> ref;
      bool same = true;
      // simd 2: the AVX-512 tiles without packed panels (same bits as the packed path); simd 3:
      // without the decode GEMV's prefetch; simd 4: that prefetch by row (the default is in address
      // order); simd 5: by row 4 KB ahead; simd 6: the bf16 tile's unpack widening; simd 7 and 8:
      // the one-token bf16 GEMV in 4- and 2-row tiles; simd 9: 4-row tiles with the unpack widening.
      for (int simd : {0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
        if (simd) LM_CHECK(lm_set_simd(1));
        else LM_CHECK(lm_set_simd(0));
        lm::gemm::set_packed(simd != 2);
        lm::gemm::set_gemv_prefetch(simd != 3);
        lm::gemm::set_gemv_prefetch_seq(simd != 4 && simd != 5);
        lm::gemm::set_gemv_prefetch_bytes(simd == 5 ? 4096 : 2048);
        lm::gemm::set_gemv_unpack(simd == 6 || simd == 9);
        lm::gemm::set_gemv_tile(simd == 7 || simd == 9 ? 4 : simd == 8 ? 2 : 8);
        // Both ways to split a one-token matmul (ops.h: fixed items, shrinking runs); only one-token
        // matmuls read the switch.
        for (int cfg = 0; cfg < 4; cfg++) {
          const int threads = 1 + cfg % 2;
          lm::cpu::set_decode_chunks(cfg / 2);
          LM_CHECK(lm_set_num_threads(threads));
          std::vector<float> out(static_cast<size_t>(tokens * n));
          lm_tensor xt = tensor(x.data(), LM_F32, {tokens, k});
          lm_tensor wt = wd == LM_F32 ? tensor(wf.data(), LM_F32, {n, k}) : tensor(wb.data(), LM_BF16, {n, k});
          lm_tensor bt = tensor(bias.data(), LM_F32, {n});
          lm_tensor ot = tensor(out.data(), LM_F32, {tokens, n});
          LM_CHECK(lm_matmul(&xt, &wt, &bt, &ot));
          if (ref.empty()) ref = out;
          else if (std::memcmp(ref.data(), out.data(), out.size() * 4) != 0) same = false;
        }
      }
      std::printf("matmul %s tokens=%lld k=%lld n=%lld: scalar, SIMD, packed or not, prefetch (none, in address "
                  "order, by row, 4 KB ahead), unpack widening or not, 8-, 4- or 2-row decode tiles, each decode split, "
                  "1 and 2 threads identical: %s\n",
                  wd == LM_F32 ? "f32" : "bf16", static_cast<long long>(tokens), static_cast<long long>(k),
                  static_cast<long long>(n), same ? "yes" : "NO");
      if (!same) failures++;
    }
  }
  LM_CHECK(lm_set_simd(1));
  lm::gemm::set_packed(true);
  lm::gemm::set_gemv_prefetch(true);
  lm::gemm::set_gemv_prefetch_seq(true);
  lm::gemm::set_gemv_prefetch_bytes(2048);
  lm::gemm::set_gemv_unpack(true);
  lm::gemm::set_gemv_tile(4);
  lm::cpu::set_decode_chunks(1);
  return failures;
}

// The LoRA tiles (row-pointer inputs) at one input, with long rows (the shrink: the decode GEMV's
// prefetching tile) and short rows (the expand: the tiles-ahead prefetch): the same bits as the
// scalar dot products, prefetch on or off, for f32 and bf16 weights.
static int check_rows_ptr(std::mt19937& rng) {
  int failures = 0;
  for (lm_dtype wd : {LM_F32, LM_BF16}) {
    for (int64_t k : {int64_t(2053), int64_t(128), int64_t(37), int64_t(256), int64_t(96), int64_t(72), int64_t(16),
                      int64_t(8), int64_t(43)}) {
      const int64_t n = 77, rb = 3, re = 74;
      std::vector<float> x = random_floats(rng, static_cast<size_t>(k));
      std::vector<float> wf = random_floats(rng, static_cast<size_t>(n * k), 0.1f);
      std::vector<uint16_t> wb(wf.size());
      for (size_t i = 0; i < wf.size(); i++) wb[i] = bf16(wf[i]);
      const float* xs[1] = {x.data()};
      std::vector<float> ref;
      bool same = true;
      // scalar; SIMD with prefetch; SIMD without; SIMD without the 16-row expand tile (bf16, one input)
      for (int mode : {0, 1, 2, 3}) {
        lm::simd::set_enabled(mode != 0);
        lm::gemm::set_prefetch(mode != 2);
        lm::gemm::set_gemv_prefetch(mode != 2);
        lm::gemm::set_expand16(mode != 3);
        std::vector<float> out(static_cast<size_t>(re - rb));
        if (wd == LM_F32) lm::gemm::matmul_rows_ptr(xs, wf.data(), 1, k, rb, re, out.data(), re - rb);
        else lm::gemm::matmul_rows_ptr(xs, wb.data(), 1, k, rb, re, out.data(), re - rb);
        if (ref.empty()) ref = out;
        else if (std::memcmp(ref.data(), out.data(), out.size() * 4) != 0) same = false;
      }
      std::printf("lora tiles %s one input k=%lld: scalar, SIMD, prefetch or not, 16-row expand tile or not identical: %s\n",
                  wd == LM_F32 ? "f32" : "bf16", static_cast<long long>(k), same ? "yes" : "NO");
      if (!same) failures++;
    }
  }
  // The 16-row expand tile against the 8-row tile and the scalar dot products over random shapes:
  // rank (k) 32 to 512, row ranges that leave 16-row tiles, 8-row tiles and single rows.
  std::uniform_int_distribution<int64_t> rank_of(32, 512), rows_of(1, 90), start_of(0, 20);
  bool random_same = true;
  for (int c = 0; c < 24; c++) {
    const int64_t k = rank_of(rng), rb = start_of(rng), re = rb + rows_of(rng);
    std::vector<float> x = random_floats(rng, static_cast<size_t>(k));
    std::vector<float> wf = random_floats(rng, static_cast<size_t>(re * k), 0.1f);
    std::vector<uint16_t> wb(wf.size());
    for (size_t i = 0; i < wf.size(); i++) wb[i] = bf16(wf[i]);
    const float* xs[1] = {x.data()};
    std::vector<float> ref;
    // scalar; SIMD with the 16-row tile; SIMD with the 8-row tile; the 16-row tile's grouped load
    // orders (1, 2 and 4 row pairs a group)
    for (int mode : {0, 1, 2, 4, 5, 6}) {
      lm::simd::set_enabled(mode != 0);
      lm::gemm::set_expand16(mode != 2);
      lm::gemm::set_expand_grouped(mode == 4 ? 1 : mode == 5 ? 2 : mode == 6 ? 4 : 0);
      std::vector<float> out(static_cast<size_t>(re - rb));
      lm::gemm::matmul_rows_ptr(xs, wb.data(), 1, k, rb, re, out.data(), re - rb);
      if (ref.empty()) ref = out;
      else if (std::memcmp(ref.data(), out.data(), out.size() * 4) != 0) random_same = false;
    }
  }
  lm::gemm::set_expand_grouped(0);
  std::printf("lora tiles bf16 one input, 24 random ranks and row ranges: 16-row tile (every grouped order), 8-row tile, scalar identical: %s\n",
              random_same ? "yes" : "NO");
  if (!random_same) failures++;
  lm::simd::set_enabled(true);
  lm::gemm::set_prefetch(true);
  lm::gemm::set_gemv_prefetch(true);
  lm::gemm::set_expand16(true);
  return failures;
}

// simd::exp (softmax and SiLU): within 4 ulp of the double-precision e^x, the same bits on the AVX2
// and scalar paths, NaN kept and no overflow to garbage at the range ends.
static int check_exp(std::mt19937& rng) {
  std::vector<float> x = random_floats(rng, 4099, 90.0f);
  x.insert(x.end(), {0.0f, -0.0f, 1.0f, -1.0f, 88.7f, -87.3f, -200.0f, 200.0f, -87.0f, 88.0f});
  std::vector<float> fast(x.size()), scalar(x.size());
  lm::simd::exp(x.data(), fast.data(), static_cast<int64_t>(x.size()));
  lm::simd::set_enabled(false);
  lm::simd::exp(x.data(), scalar.data(), static_cast<int64_t>(x.size()));
  lm::simd::set_enabled(true);
  double worst = 0;
  for (size_t i = 0; i < x.size(); i++) {
    if (x[i] < -87.0f || x[i] > 88.5f) continue;
    const double want = std::exp(static_cast<double>(x[i]));
    const double ulp = std::nextafter(static_cast<float>(want), INFINITY) - static_cast<float>(want);
    worst = std::max(worst, std::fabs(fast[i] - want) / ulp);
  }
  const bool same = std::memcmp(fast.data(), scalar.data(), fast.size() * 4) == 0;
  float nan_in = NAN, nan_out = 0;
  lm::simd::exp(&nan_in, &nan_out, 1);
  const bool ok = same && worst <= 4 && std::isnan(nan_out) && fast[fast.size() - 3] >= 0 && std::isfinite(fast[fast.size() - 3]);
  std::printf("exp: worst %.2f ulp, AVX2 and scalar identical: %s, NaN kept: %s\n", worst, same ? "yes" : "NO",
              std::isnan(nan_out) ? "yes" : "NO");
  return ok ? 0 : 1;
}

// simd::axpy_rows (attention's value sum): the same bits as one axpy per row in order, on the AVX2
// and scalar paths, for widths with and without 8- and 32-float blocks.
static int check_axpy_rows(std::mt19937& rng) {
  bool same = true;
  for (int64_t n : {64, 13, 40, 96}) {
    const int64_t count = 37;
    std::vector<float> a = random_floats(rng, static_cast<size_t>(count)), data = random_floats(rng, static_cast<size_t>(count * n));
    std::vector<const float*> rows;
    for (int64_t p = 0; p < count; p++) rows.push_back(data.data() + p * n);
    std::vector<float> init = random_floats(rng, static_cast<size_t>(n));
    std::vector<float> seq = init, fast = init, scalar = init;
    for (int64_t p = 0; p < count; p++) lm::simd::axpy(a[static_cast<size_t>(p)], rows[static_cast<size_t>(p)], seq.data(), n);
    lm::simd::axpy_rows(a.data(), rows.data(), count, fast.data(), n);
    lm::simd::set_enabled(false);
    lm::simd::axpy_rows(a.data(), rows.data(), count, scalar.data(), n);
    lm::simd::set_enabled(true);
    same = same && std::memcmp(seq.data(), fast.data(), static_cast<size_t>(n) * 4) == 0 &&
           std::memcmp(seq.data(), scalar.data(), static_cast<size_t>(n) * 4) == 0;
  }
  std::printf("axpy_rows: identical to axpy row by row, AVX2 and scalar: %s\n", same ? "yes" : "NO");
  return same ? 0 : 1;
}

// Background prefault: mappings queued and unmapped at once (what a garbage-collected checkpoint
// does) must be cancelled and waited out before munmap, or the thread would read unmapped pages.
static int check_prefault_cancel() {
  constexpr size_t kBytes = size_t(24) << 20;
  int cancelled = 0;
  for (int round = 0; round < 16; round++) {
    void* first = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    void* second = mmap(nullptr, kBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (first == MAP_FAILED || second == MAP_FAILED) return 1;
    LM_CHECK(lm_prefault_async(first, kBytes));
    LM_CHECK(lm_prefault_async(second, kBytes));
    lm_prefault_cancel(second, kBytes);  // queued (or running): dropped or waited out
    munmap(second, kBytes);
    lm_prefault_cancel(first, kBytes);
    munmap(first, kBytes);
    cancelled++;
  }
  const bool bad = lm_prefault_async(nullptr, 4096) != LM_ERR_ARGUMENT;
  std::printf("prefault: %d rounds queued, cancelled and unmapped; null range refused: %s\n", cancelled,
              bad ? "NO" : "yes");
  return bad ? 1 : 0;
}

// Attention at decode with its K/V prefetch on and off (ops.h set_attn_prefetch), f32 and bf16
// caches, 1 and 2 threads: the prefetch moves no data, so the outputs are the same bits.
static int check_attention_prefetch(std::mt19937& rng) {
  int failures = 0;
  const int64_t heads = 8, kv_heads = 2, d = 64, block = 4, blocks = 40, tokens = 2;
  const int64_t cache_n = blocks * block * kv_heads * d;
  std::vector<float> q = random_floats(rng, static_cast<size_t>(tokens * heads * d));
  std::vector<float> kf = random_floats(rng, static_cast<size_t>(cache_n)), vf = random_floats(rng, static_cast<size_t>(cache_n));
  std::vector<uint16_t> kb(kf.size()), vb(vf.size());
  for (size_t i = 0; i < kf.size(); i++) {
    kb[i] = bf16(kf[i]);
    vb[i] = bf16(vf[i]);
  }
  // Two sequences over scattered blocks, at positions 130 and 57.
  std::vector<int32_t> tables(2 * blocks);
  for (int64_t i = 0; i < blocks; i++) {
    tables[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7) % blocks);
    tables[static_cast<size_t>(blocks + i)] = static_cast<int32_t>((i * 11 + 3) % blocks);
  }
  const int32_t seq[2] = {0, 1}, pos[2] = {130, 57};
  for (lm_dtype cd : {LM_F32, LM_BF16}) {
    std::vector<float> ref;
    bool same = true;
    for (int cfg = 0; cfg < 4; cfg++) {
      lm::cpu::set_attn_prefetch(cfg % 2 == 1);
      LM_CHECK(lm_set_num_threads(1 + cfg / 2));
      std::vector<float> out(static_cast<size_t>(tokens * heads * d));
      lm::AttentionArgs a{};
      a.q = q.data();
      a.k_cache = cd == LM_F32 ? static_cast<const void*>(kf.data()) : kb.data();
      a.v_cache = cd == LM_F32 ? static_cast<const void*>(vf.data()) : vb.data();
      a.cache_dtype = cd;
      a.block_tables = tables.data();
      a.token_seq = seq;
      a.token_pos = pos;
      a.tokens = tokens;
      a.heads = heads;
      a.kv_heads = kv_heads;
      a.head_dim = d;
      a.block_size = block;
      a.max_blocks = blocks;
      a.num_blocks = blocks;
      a.scale = 0.125f;
      a.window = 0;
      a.out = out.data();
      lm::cpu::attention(a);
      if (ref.empty()) ref = out;
      else if (std::memcmp(ref.data(), out.data(), out.size() * 4) != 0) same = false;
    }
    std::printf("attention %s cache: K/V prefetch on and off, 1 and 2 threads identical: %s\n",
                cd == LM_F32 ? "f32" : "bf16", same ? "yes" : "NO");
    if (!same) failures++;
  }
  lm::cpu::set_attn_prefetch(true);
  return failures;
}

int main() {
  std::mt19937 rng(7);
  int failures = 0;
  if (lm_simd_enabled()) failures += check_matmul(rng);
  if (lm_simd_enabled()) failures += check_rows_ptr(rng);
  if (lm_simd_enabled()) failures += check_exp(rng);
  if (lm_simd_enabled()) failures += check_axpy_rows(rng);
  failures += check_attention_prefetch(rng);
  LoraProblem p = make_lora_problem(rng, 67, 131, {96, 32, 32}, {1, 2, 4, 8, 16, 64, 128});
  std::vector<double> want = lora_oracle(p);
  std::vector<std::vector<float>> by_path;  // SIMD (AVX-512 tiles where present), then scalar
  for (int simd : {1, 0}) {
    if (simd && !lm_simd_enabled()) continue;
    LM_CHECK(lm_set_simd(simd));
    LM_CHECK(lm_set_num_threads(1));
    std::vector<float> one = run_lora(p);
    LM_CHECK(lm_set_num_threads(2));
    std::vector<float> two = run_lora(p);
    double worst = 0;
    for (size_t i = 0; i < want.size(); i++) worst = std::max(worst, std::fabs(one[i] - want[i]));
    const bool same = std::memcmp(one.data(), two.data(), one.size() * 4) == 0;
    std::printf("lora simd=%d max|err|=%.3g, 1 vs 2 threads identical: %s\n", simd, worst, same ? "yes" : "NO");
    if (worst > 1e-4 || !same) failures++;
    by_path.push_back(one);
  }
  if (by_path.size() == 2) {
    // The shrink and expand run on the matmul tiles: the same bits as the scalar dot products.
    const bool same = std::memcmp(by_path[0].data(), by_path[1].data(), by_path[0].size() * 4) == 0;
    std::printf("lora SIMD and scalar identical: %s\n", same ? "yes" : "NO");
    if (!same) failures++;
  }
  if (by_path.size() == 2) {
    // The short-row prefetch (the expand's tiles) only moves lines into the cache: same bits off.
    LM_CHECK(lm_set_simd(1));
    lm::gemm::set_prefetch(false);
    std::vector<float> off = run_lora(p);
    lm::gemm::set_prefetch(true);
    const bool same = std::memcmp(off.data(), by_path[0].data(), off.size() * 4) == 0;
    std::printf("lora with and without the tile prefetch identical: %s\n", same ? "yes" : "NO");
    if (!same) failures++;
  }
  // A slot beyond the adapter table is a typed error, not a crash.
  p.slot[3] = p.n_keys;
  std::vector<float> y = p.y0;
  lm_tensor x = tensor(p.x.data(), LM_F32, {p.tokens, p.h_in});
  lm_tensor slot = tensor(p.slot.data(), LM_I32, {p.tokens});
  lm_tensor yt = tensor(y.data(), LM_F32, {p.tokens, p.n_out});
  lm_tensor a = tensor(p.a_pool.data(), LM_F32, {static_cast<int64_t>(p.a_pool.size())});
  lm_tensor b = tensor(p.b_pool.data(), LM_F32, {static_cast<int64_t>(p.b_pool.size())});
  const int64_t entries = static_cast<int64_t>(p.rank.size());
  lm_tensor rank = tensor(p.rank.data(), LM_I32, {entries});
  lm_tensor scale = tensor(p.scale.data(), LM_F32, {entries});
  lm_tensor ao = tensor(p.a_offset.data(), LM_I64, {entries});
  lm_tensor bo = tensor(p.b_offset.data(), LM_I64, {entries});
  lm_lora_weights w{&a, &b, p.n_keys, p.n_slices, {}, &rank, &scale, &ao, &bo, p.max_rank, 0};
  std::memcpy(w.slice_width, p.widths, sizeof(p.widths));
  const lm_status s = lm_lora_apply(&w, &x, &slot, &yt);
  std::printf("bad slot -> status %d: %s\n", (int)s, lm_last_error());
  if (s != LM_ERR_SLOT) failures++;
  w.b_transposed = 2;
  p.slot[3] = 0;
  const lm_status s2 = lm_lora_apply(&w, &x, &slot, &yt);
  std::printf("b_transposed 2 -> status %d: %s\n", (int)s2, lm_last_error());
  if (s2 != LM_ERR_ARGUMENT) failures++;
  failures += check_kmajor(rng);
  failures += check_prefault_cancel();
  std::printf("%s\n", failures ? "FAILED" : "ok");
  return failures ? 1 : 0;
}
