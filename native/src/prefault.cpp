// lm_prefault: makes a mapped checkpoint resident for this process before the first forward pass.
// MADV_POPULATE_READ fills the page tables from the page cache (no copy of a private mapping), and
// one read per page then pays the remaining first-access cost per page: on this project's VMs that
// is ~2 µs of user time per 4 KiB page even with the tables filled, 1.2 s for a 2.2 GB checkpoint,
// which otherwise lands inside the first request's matmuls.
//
// lm_prefault_async does the same work on one background thread so that loading returns at once;
// ranges are cancelled (and waited out) before they are unmapped.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>

#include "common.h"
#include "loramesh/core.h"
#include "threads.h"

namespace {

size_t page_size() { return static_cast<size_t>(sysconf(_SC_PAGESIZE)); }

// Page tables, then one read per page, for whole pages [begin, end).
void touch(uintptr_t begin, uintptr_t end) {
#ifdef MADV_POPULATE_READ
  // Best effort: kernels before 5.14 refuse it; the reads below then fault the pages in.
  (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_POPULATE_READ);
#endif
  const size_t page = page_size();
  uint8_t sink = 0;
  for (uintptr_t p = begin; p < end; p += page) sink ^= *reinterpret_cast<const volatile uint8_t*>(p);
  (void)sink;
}

struct Range {
  uintptr_t begin = 0, end = 0;
  bool overlaps(uintptr_t b, uintptr_t e) const { return begin < e && b < end; }
};

// One background thread working through a queue of ranges, 4 MiB at a time so that a cancel (a
// mapping about to be unmapped) waits for at most one chunk.
class Prefaulter {
 public:
  void enqueue(Range r) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!started_) {
      std::thread([this] { loop(); }).detach();  // lives as long as the process; never joined
      started_ = true;
    }
    queue_.push_back(r);
    work_.notify_one();
  }

  void cancel(uintptr_t b, uintptr_t e) {
    std::unique_lock<std::mutex> lock(mutex_);
    queue_.erase(std::remove_if(queue_.begin(), queue_.end(), [&](const Range& r) { return r.overlaps(b, e); }),
                 queue_.end());
    if (!current_.overlaps(b, e)) return;
    cancel_current_ = true;
    left_.wait(lock, [&] { return !current_.overlaps(b, e); });
  }

 private:
  static constexpr uintptr_t kChunk = uintptr_t(4) << 20;

  void loop() {
    for (;;) {
      Range r;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_.wait(lock, [&] { return !queue_.empty(); });
        r = queue_.front();
        queue_.pop_front();
        current_ = r;
        cancel_current_ = false;
      }
      for (uintptr_t p = r.begin; p < r.end; p += kChunk) {
        {
          std::lock_guard<std::mutex> lock(mutex_);
          if (cancel_current_) break;
        }
        touch(p, std::min(p + kChunk, r.end));
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        current_ = Range{};
      }
      left_.notify_all();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_, left_;
  std::deque<Range> queue_;
  Range current_;
  bool cancel_current_ = false;
  bool started_ = false;
};

Prefaulter& prefaulter() {
  static Prefaulter* p = new Prefaulter();  // never destroyed: its detached thread may still run at exit
  return *p;
}

// The whole pages covering [data, data+bytes): mappings are whole pages, so they are all mapped.
Range pages_of(const void* data, size_t bytes) {
  const size_t page = page_size();
  const uintptr_t begin = reinterpret_cast<uintptr_t>(data) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes + page - 1) / page * page;
  return {begin, end};
}

}  // namespace

extern "C" lm_status lm_prefault(const void* data, size_t bytes) {
  using lm::fail;
  if (data == nullptr && bytes > 0) return fail(LM_ERR_ARGUMENT, "prefault: data is null");
  if (bytes == 0) return LM_OK;
  const Range r = pages_of(data, bytes);
  constexpr uintptr_t kItem = uintptr_t(16) << 20;  // 16 MiB per work item
  lm::parallel_for(static_cast<int64_t>((r.end - r.begin + kItem - 1) / kItem), [&](int64_t item) {
    const uintptr_t first = r.begin + static_cast<uintptr_t>(item) * kItem;
    touch(first, std::min(first + kItem, r.end));
  });
  return LM_OK;
}

extern "C" lm_status lm_prefault_async(const void* data, size_t bytes) {
  using lm::fail;
  if (data == nullptr && bytes > 0) return fail(LM_ERR_ARGUMENT, "prefault: data is null");
  if (bytes > 0) prefaulter().enqueue(pages_of(data, bytes));
  return LM_OK;
}

extern "C" void lm_prefault_cancel(const void* data, size_t bytes) {
  if (data == nullptr || bytes == 0) return;
  const Range r = pages_of(data, bytes);
  prefaulter().cancel(r.begin, r.end);
}
