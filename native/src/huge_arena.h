// One anonymous mapping for many small weight pools, advised into 2 MiB pages (issue 17, twentieth
// pass). The coupled backend's LoRA pools are a few hundred KB to a few MB each, so heap copies
// land on 4 KiB pages while the mapped checkpoint gets 2 MiB entries; streamed at one token, the
// adapter kernels read those 4 KiB-paged bytes slower (bench/lora_stream_bench.cpp). Pools are
// placed back to back (64-byte aligned), so the extra memory is the rounding of the total to 2 MiB.
#pragma once

#include <cstddef>
#include <cstdint>

namespace lm {

class HugeArena {
 public:
  HugeArena() = default;
  HugeArena(const HugeArena&) = delete;
  HugeArena& operator=(const HugeArena&) = delete;
  ~HugeArena();

  // Maps room for `bytes` (rounded up to 2 MiB) and advises MADV_HUGEPAGE; false if the mapping
  // failed (callers then keep their heap copies). Call once.
  bool reserve(size_t bytes);
  // The next 64-byte-aligned `bytes` of the mapping (nullptr past its end).
  uint8_t* take(size_t bytes);
  size_t mapped_bytes() const { return mapped_; }

  // LORAMESH_LORA_HUGE=0 keeps the pools where they are (heap, 4 KiB pages), for comparisons.
  static bool enabled();
  static void set_enabled(bool on);  // tests: both placements in one process

 private:
  uint8_t* base_ = nullptr;
  size_t mapped_ = 0, used_ = 0;
};

}  // namespace lm
