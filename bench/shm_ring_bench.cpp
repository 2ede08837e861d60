// Shared-memory ring probe: one LoRA server ring thread (this process) and one worker (a forked
// child process) doing back-to-back site round trips, post → wait, as the native step does. Prints
// one JSON object: p50/p99 µs of the round trip and the medians of where it went (the worker's
// post → the server saw it → its kernel started → the response was written → the worker saw it),
// from the timestamps both sides write into the slot (CLOCK_MONOTONIC, one clock for both).
//
//   pnpm bench:shm-ring [-- --iterations N --rows N --server-threads N
//                          --sites-per-step N --gap-us N --step-gap-us N]
// Run it beside `yes > /dev/null` (one per core) for the loaded figures.
// A step shape (--sites-per-step 12 --gap-us 20 --step-gap-us 1000: tiny-llama's 12 sites, a few
// ops between them, the engine loop between steps) times whole steps too ("step_us"): begin_step,
// each site after `gap-us` of busy work, end_step, then a sleep. Default: one site per step.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../native/src/shm_ring.h"
#include "../native/tests/test_util.h"
#include "loramesh/core.h"

using namespace lm;

namespace {

// The bundled tiny-llama's qkv site: h 64 → q 64, k 32, v 32; six adapters r4–r64 as the mesh bench.
constexpr int32_t kH = 64;
const std::vector<int32_t> kWidths = {64, 32, 32};
const std::vector<int32_t> kRanks = {4, 8, 16, 16, 32, 64};

std::shared_ptr<const Tables> make_tables() {
  std::mt19937 rng(7);
  lmtest::LoraProblem p = lmtest::make_lora_problem(rng, 1, kH, kWidths, kRanks);
  auto t = std::make_shared<Tables>();
  SiteWeights w;
  w.dtype = LM_F32;
  w.a_pool.resize(p.a_pool.size() * 4);
  std::memcpy(w.a_pool.data(), p.a_pool.data(), w.a_pool.size());
  w.b_pool.resize(p.b_pool.size() * 4);
  std::memcpy(w.b_pool.data(), p.b_pool.data(), w.b_pool.size());
  w.n_keys = p.n_keys;
  w.n_slices = p.n_slices;
  w.max_rank = p.max_rank;
  for (int s = 0; s < p.n_slices; s++) w.widths[s] = p.widths[s];
  w.rank = p.rank;
  w.scale = p.scale;
  w.a_offset = p.a_offset;
  w.b_offset = p.b_offset;
  for (int32_t k = 0; k < p.n_keys; k++) {
    const std::string id = "a" + std::to_string(k);
    t->slot_of[id] = k;
    t->slot_names.push_back(id);
  }
  for (int32_t layer = 0; layer < 3; layer++) t->sites[site_key(layer, kSiteQkv, 0)] = w;
  return t;
}

double pct(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())));
  return v[i];
}

struct Shape {
  int sites_per_step = 1;
  int gap_us = 0, step_gap_us = 0;
};

void busy_us(int us) {
  const int64_t until = shm::now_ns() + int64_t{us} * 1000;
  while (shm::now_ns() < until) {
  }
}

int worker(const std::string& name, int iterations, int rows, const Shape& shape) {
  std::shared_ptr<SiteBackend> b;
  if (shm::connect(name, &b) != LM_OK) {
    fprintf(stderr, "connect: %s\n", lm_last_error());
    return 1;
  }
  std::vector<const char*> ids;
  std::vector<std::string> names;
  for (size_t k = 0; k < kRanks.size(); k++) names.push_back("a" + std::to_string(k));
  for (auto& n : names) ids.push_back(n.c_str());
  std::vector<float> x(static_cast<size_t>(rows * kH)), delta(static_cast<size_t>(rows * 128));
  for (size_t i = 0; i < x.size(); i++) x[i] = static_cast<float>(i % 17) * 0.01f;
  std::vector<int32_t> row_adapter(static_cast<size_t>(rows));
  for (int r = 0; r < rows; r++) row_adapter[static_cast<size_t>(r)] = r % static_cast<int>(ids.size());
  std::vector<double> total, queue, batch, compute, wake, step;
  const int warmup = 50;
  for (int i = 0; i < iterations + warmup; i++) {
    const int64_t step0 = shm::now_ns();
    if (b->begin_step(ids.data(), static_cast<int32_t>(ids.size())) != LM_OK) return 1;
    for (int k = 0; k < shape.sites_per_step; k++) {
    busy_us(shape.gap_us);
    SiteCall c{};
    c.layer = k % 3;
    c.site = kSiteQkv;
    c.x = x.data();
    c.rows = rows;
    c.in_features = kH;
    c.out_features = 128;
    c.row_adapter = row_adapter.data();
    c.delta = delta.data();
    uint64_t ticket = 0;
    const int64_t t0 = shm::now_ns();
    if (b->post(c, &ticket) != LM_OK || b->wait(ticket, 10'000'000) != LM_OK) {
      fprintf(stderr, "site: %s\n", lm_last_error());
      return 1;
    }
    const int64_t t1 = shm::now_ns();
    if (i < warmup) continue;
    const shm::SiteTiming& t = shm::last_site_timing();
    total.push_back(static_cast<double>(t1 - t0) / 1e3);
    queue.push_back(static_cast<double>(t.seen_ns - t.post_ns) / 1e3);
    batch.push_back(static_cast<double>(t.run_ns - t.seen_ns) / 1e3);
    compute.push_back(static_cast<double>(t.done_ns - t.run_ns) / 1e3);
    wake.push_back(static_cast<double>(t.woke_ns - t.done_ns) / 1e3);
    }
    b->end_step();
    if (i >= warmup) step.push_back(static_cast<double>(shm::now_ns() - step0) / 1e3);
    if (shape.step_gap_us > 0) usleep(static_cast<useconds_t>(shape.step_gap_us));
  }
  const shm::RingTotals tot = shm::ring_totals();
  printf(
      "{\"round_trip_us\":{\"p50\":%.1f,\"p99\":%.1f},\"median_us\":{\"post_to_seen\":%.1f,\"seen_to_run\":%.1f,"
      "\"compute\":%.1f,\"done_to_woke\":%.1f},\"p99_us\":{\"post_to_seen\":%.1f,\"compute\":%.1f,\"done_to_woke\":%.1f},"
      "\"step_us\":{\"p50\":%.1f,\"p99\":%.1f,\"sites\":%d,\"gap_us\":%d,\"step_gap_us\":%d},"
      "\"worker_sleeps\":%llu,\"sites\":%llu,\"rows\":%d,\"iterations\":%d}\n",
      pct(total, 50), pct(total, 99), pct(queue, 50), pct(batch, 50), pct(compute, 50), pct(wake, 50), pct(queue, 99),
      pct(compute, 99), pct(wake, 99), pct(step, 50), pct(step, 99), shape.sites_per_step, shape.gap_us,
      shape.step_gap_us, static_cast<unsigned long long>(tot.worker_sleeps),
      static_cast<unsigned long long>(tot.sites), rows, iterations);
  shm::close_backend(b.get());
  return 0;
}

int arg(int argc, char** argv, const char* flag, int fallback) {
  for (int i = 1; i + 1 < argc; i++)
    if (std::strcmp(argv[i], flag) == 0) return std::atoi(argv[i + 1]);
  return fallback;
}

}  // namespace

int main(int argc, char** argv) {
  const int iterations = arg(argc, argv, "--iterations", 2000);
  const int rows = arg(argc, argv, "--rows", 8);
  const int threads = arg(argc, argv, "--server-threads", 0);
  Shape shape;
  shape.sites_per_step = std::max(1, arg(argc, argv, "--sites-per-step", 1));
  shape.gap_us = std::max(0, arg(argc, argv, "--gap-us", 0));
  shape.step_gap_us = std::max(0, arg(argc, argv, "--step-gap-us", 0));
  int to_child[2];
  if (pipe(to_child) != 0) return 1;
  // Fork before any thread starts; the child waits for the segment's name.
  const pid_t child = fork();
  if (child == 0) {
    close(to_child[1]);
    char buf[128] = {0};
    const ssize_t n = read(to_child[0], buf, sizeof buf - 1);
    if (n <= 0) return 1;
    return worker(std::string(buf, static_cast<size_t>(n)), iterations, rows, shape);
  }
  close(to_child[0]);
  if (threads > 0) lm_set_num_threads(threads);
  shm::ServerOptions o;
  o.n_layers = 3;
  o.h_in[0] = kH, o.n_out[0] = 128;
  o.h_in[1] = kH, o.n_out[1] = kH;
  o.h_in[2] = kH, o.n_out[2] = 320;
  o.h_in[3] = 160, o.n_out[3] = kH;
  o.segment_bytes = 4u << 20;
  auto server = shm::Server::start(o);
  server->set_tables(make_tables());
  std::string name;
  uint64_t bytes = 0;
  if (server->attach("probe-worker", &name, &bytes) != LM_OK) {
    fprintf(stderr, "attach: %s\n", lm_last_error());
    return 1;
  }
  if (write(to_child[1], name.data(), name.size()) != static_cast<ssize_t>(name.size())) return 1;
  close(to_child[1]);
  int status = 0;
  waitpid(child, &status, 0);
  server->stop();
  return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
