// See site_probe.h.
#include "site_probe.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace lm::site_probe {

namespace {

const char* dir() {
  static const char* d = [] {
    const char* v = std::getenv("LM_SITE_PROBE");
    return v != nullptr && *v != '\0' ? v : nullptr;
  }();
  return d;
}

std::atomic<uint64_t> calls[kPhases];
std::atomic<int64_t> total_ns[kPhases];
const char* const kNames[kPhases] = {"local_run", "server_apply", "server_respond", "server_after", "worker_post",
                                     "worker_copy"};

void write() {
  const std::string path = std::string(dir()) + "/site-probe-" + std::to_string(getpid()) + ".json";
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) return;
  // The process's command line (which service this is), quotes and backslashes dropped.
  std::string cmd;
  if (FILE* c = std::fopen("/proc/self/cmdline", "r")) {
    for (int ch; (ch = std::fgetc(c)) != EOF && cmd.size() < 200;)
      if (ch != '"' && ch != '\\') cmd.push_back(ch == 0 ? ' ' : static_cast<char>(ch));
    std::fclose(c);
  }
  std::fprintf(f, "{\"pid\":%d,\"cmd\":\"%s\"", static_cast<int>(getpid()), cmd.c_str());
  for (int p = 0; p < kPhases; p++)
    std::fprintf(f, ",\"%s\":{\"calls\":%llu,\"ns\":%lld}", kNames[p],
                 static_cast<unsigned long long>(calls[p].load()), static_cast<long long>(total_ns[p].load()));
  std::fprintf(f, "}\n");
  std::fclose(f);
  std::rename(tmp.c_str(), path.c_str());
}

}  // namespace

bool on() { return dir() != nullptr; }

int64_t now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void add(Phase phase, int64_t ns) {
  total_ns[phase].fetch_add(ns, std::memory_order_relaxed);
  const uint64_t n = calls[phase].fetch_add(1, std::memory_order_relaxed) + 1;
  if (n % 2048 == 0) write();
}

}  // namespace lm::site_probe
