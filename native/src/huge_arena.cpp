#include "huge_arena.h"

#include <cstdlib>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace lm {

namespace {
constexpr size_t kHuge = size_t(2) << 20;

bool g_enabled = [] {
  const char* v = std::getenv("LORAMESH_LORA_HUGE");
  return v == nullptr || std::strcmp(v, "0") != 0;
}();

}  // namespace

bool HugeArena::enabled() { return g_enabled; }
void HugeArena::set_enabled(bool on) { g_enabled = on; }

bool HugeArena::reserve(size_t bytes) {
#if defined(__linux__)
  if (base_ != nullptr || bytes == 0) return false;
  const size_t want = (bytes + kHuge - 1) / kHuge * kHuge;
  // Over-map by 2 MiB and trim, so the arena starts on a 2 MiB boundary (a PMD entry needs it).
  void* p = mmap(nullptr, want + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  const auto raw = reinterpret_cast<uintptr_t>(p);
  const uintptr_t start = (raw + kHuge - 1) & ~(uintptr_t(kHuge) - 1);
  if (start > raw) munmap(p, start - raw);
  const uintptr_t end = start + want, raw_end = raw + want + kHuge;
  if (raw_end > end) munmap(reinterpret_cast<void*>(end), raw_end - end);
  base_ = reinterpret_cast<uint8_t*>(start);
  mapped_ = want;
  (void)madvise(base_, mapped_, MADV_HUGEPAGE);  // advice: without THP the pages stay 4 KiB
  return true;
#else
  (void)bytes;
  return false;
#endif
}

uint8_t* HugeArena::take(size_t bytes) {
  const size_t at = (used_ + 63) / 64 * 64;
  if (base_ == nullptr || at + bytes > mapped_) return nullptr;
  used_ = at + bytes;
  return base_ + at;
}

HugeArena::~HugeArena() {
#if defined(__linux__)
  if (base_ != nullptr) munmap(base_, mapped_);
#endif
}

}  // namespace lm
