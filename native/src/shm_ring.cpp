// Segment naming, creation, mapping and reaping, and the futex helpers of the shared-memory rings.
#include "shm_ring.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <random>

#include "common.h"

#ifndef FUTEX2_SIZE_U32
#define FUTEX2_SIZE_U32 0x02
#endif

namespace lm::shm {

namespace {

constexpr const char* kDir = "/dev/shm/";
constexpr const char* kPrefix = "loramesh-";

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

timespec to_timespec(int64_t ns) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(ns / 1000000000);
  ts.tv_nsec = static_cast<long>(ns % 1000000000);
  return ts;
}

std::string random_hex() {
  std::random_device rd;
  const uint64_t v = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  char buf[17];
  snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

SlotLayout slot_layout(int64_t rows, int64_t h_in, int64_t n_out) {
  SlotLayout l;
  l.ids = 0;
  l.row_adapter = align_up(kIdsBytes, 64);
  l.row_expert = align_up(l.row_adapter + static_cast<size_t>(rows) * 4, 64);
  l.x = align_up(l.row_expert + static_cast<size_t>(rows) * 4, 64);
  l.delta = align_up(l.x + static_cast<size_t>(rows * h_in) * 4, 64);
  l.end = l.delta + static_cast<size_t>(rows * n_out) * 4;
  return l;
}

void futex_wake(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

bool futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns) {
  timespec ts = to_timespec(timeout_ns < 0 ? 0 : timeout_ns);
  const long r = syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, expected,
                         timeout_ns < 0 ? nullptr : &ts, nullptr, 0);
  return !(r == -1 && errno == ETIMEDOUT);
}

bool futex_wait_any(std::atomic<uint32_t>* const* words, const uint32_t* expected, int n, int64_t timeout_ns) {
#ifdef SYS_futex_waitv
  futex_waitv waiters[128];
  if (n > 128) n = 128;
  for (int i = 0; i < n; i++) {
    waiters[i].val = expected[i];
    waiters[i].uaddr = reinterpret_cast<uintptr_t>(words[i]);
    waiters[i].flags = FUTEX2_SIZE_U32;
    waiters[i].__reserved = 0;
  }
  // futex_waitv takes an absolute CLOCK_MONOTONIC deadline.
  timespec deadline = to_timespec(now_ns() + (timeout_ns < 0 ? 0 : timeout_ns));
  const long r = syscall(SYS_futex_waitv, waiters, n, 0, timeout_ns < 0 ? nullptr : &deadline, CLOCK_MONOTONIC);
  if (r >= 0) return true;
  if (errno == ETIMEDOUT) return false;
  if (errno != ENOSYS) return true;  // EAGAIN: a word already changed
#endif
  // Kernels before 5.16: wait on the first word with a short timeout, the caller rescans.
  const int64_t slice = timeout_ns < 0 || timeout_ns > 200000 ? 200000 : timeout_ns;
  return futex_wait(words[0], expected[0], slice) || timeout_ns > slice;
}

int64_t env_us(const char* name, int64_t fallback) {
  const char* v = getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long us = strtoll(v, &end, 10);
  return *end == '\0' && us >= 0 && us <= 10'000'000 ? us : fallback;  // ignore garbage, cap at 10 s
}

namespace {
// struct sched_attr of sched_setattr(2) (glibc has no wrapper).
struct SchedAttr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime, sched_deadline, sched_period;
  uint32_t sched_util_min, sched_util_max;
};
}  // namespace

bool ring_thread_slice() {
  static const int64_t slice_us = env_us("LM_RING_SLICE_US", 0);
  thread_local int state = 0;  // 0: not tried, 1: set, 2: off or refused
  if (state == 0) {
    state = 2;
#if defined(SYS_sched_setattr) && defined(SYS_sched_getattr)
    SchedAttr a{};
    if (slice_us > 0 && syscall(SYS_sched_getattr, 0, &a, sizeof a, 0) == 0 && a.sched_policy == 0 /* SCHED_OTHER */) {
      a.size = sizeof a;
      a.sched_flags = 0;
      a.sched_runtime = static_cast<uint64_t>(slice_us) * 1000;  // the fair class's slice (kernel ≥ 6.12)
      if (syscall(SYS_sched_setattr, 0, &a, 0) == 0) state = 1;
    }
#endif
  }
  return state == 1;
}

int64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

bool pid_alive(int32_t pid) {
  if (pid <= 0) return false;
  return kill(pid, 0) == 0 || errno == EPERM;
}

bool parse_name(const std::string& name, int32_t* pid) {
  const size_t plen = std::strlen(kPrefix);
  if (name.size() > 64 || name.compare(0, plen, kPrefix) != 0) return false;
  size_t i = plen;
  int64_t v = 0;
  const size_t digits = i;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && v < INT32_MAX) v = v * 10 + (name[i++] - '0');
  if (i == digits || i >= name.size() || name[i] != '-' || v <= 0 || v > INT32_MAX) return false;
  const size_t hex = ++i;
  for (; i < name.size(); i++)
    if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f'))) return false;
  if (name.size() - hex != 16) return false;
  if (pid) *pid = static_cast<int32_t>(v);
  return true;
}

lm_status create_segment(size_t bytes, std::string* name, Mapping* out) {
  const size_t header = align_up(sizeof(Header), 4096);
  if (bytes < header + kSlots * (kIdsBytes + 4096)) return fail(LM_ERR_ARGUMENT, "shared-memory segment too small");
  const size_t slot_bytes = (bytes - header) / kSlots / 64 * 64;
  for (int attempt = 0; attempt < 4; attempt++) {
    *name = std::string(kPrefix) + std::to_string(getpid()) + "-" + random_hex();
    const std::string path = kDir + *name;
    const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 && errno == EEXIST) continue;
    if (fd < 0) return fail(LM_ERR_MEMORY, "cannot create " + path + ": " + strerror(errno));
    if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
      const int e = errno;
      close(fd);
      unlink(path.c_str());
      return fail(LM_ERR_MEMORY, "cannot size " + path + ": " + strerror(e));
    }
    void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (base == MAP_FAILED) {
      unlink(path.c_str());
      return fail(LM_ERR_MEMORY, "cannot map " + path + ": " + strerror(errno));
    }
    // Touch every page now: a SIGBUS from a full /dev/shm happens here, not mid-step.
#ifdef MADV_POPULATE_WRITE
    if (madvise(base, bytes, MADV_POPULATE_WRITE) != 0)
#endif
      std::memset(base, 0, bytes);
    Header* h = new (base) Header();
    h->magic = kMagic;
    h->n_slots = kSlots;
    h->segment_bytes = bytes;
    h->slot_bytes = slot_bytes;
    h->data_offset = header;
    h->server_pid = getpid();
    h->worker_pid.store(0);
    h->state.store(kCreated);
    h->server_bell.store(0);
    for (auto& s : h->slots) {
      s.req_seq.store(0);
      s.resp_seq.store(0);
      s.ack_seq.store(0);
    }
    out->base = base;
    out->bytes = bytes;
    out->data_offset = header;
    out->slot_bytes = slot_bytes;
    return LM_OK;
  }
  return fail(LM_ERR_MEMORY, "cannot pick a fresh shared-memory name");
}

lm_status open_segment(const std::string& name, Mapping* out) {
  if (!parse_name(name, nullptr)) return fail(LM_ERR_ARGUMENT, "not a loramesh ring segment name: " + name);
  const std::string path = kDir + name;
  const int fd = open(path.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return fail(LM_ERR_ARGUMENT, "cannot open " + path + ": " + strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid() ||
      static_cast<size_t>(st.st_size) < sizeof(Header)) {
    close(fd);
    return fail(LM_ERR_ARGUMENT, path + " is not a ring segment of this user");
  }
  const size_t bytes = static_cast<size_t>(st.st_size);
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (base == MAP_FAILED) return fail(LM_ERR_MEMORY, "cannot map " + path + ": " + strerror(errno));
  // Both sides have it mapped now: the name is no longer needed, so nothing can leak.
  unlink(path.c_str());
  Header* h = static_cast<Header*>(base);
  const size_t data_offset = h->data_offset, slot_bytes = h->slot_bytes;
  if (h->magic != kMagic || h->n_slots != kSlots || h->segment_bytes != bytes || data_offset < sizeof(Header) ||
      slot_bytes < kIdsBytes || data_offset + kSlots * slot_bytes > bytes) {
    munmap(base, bytes);
    return fail(LM_ERR_ARGUMENT, path + " has a malformed header");
  }
  out->base = base;
  out->bytes = bytes;
  out->data_offset = data_offset;
  out->slot_bytes = slot_bytes;
  return LM_OK;
}

void unmap(Mapping* m) {
  if (m->base) munmap(m->base, m->bytes);
  m->base = nullptr;
  m->bytes = 0;
}

void unlink_name(const std::string& name) {
  if (parse_name(name, nullptr)) unlink((kDir + name).c_str());
}

int reap_dead_segments() {
  DIR* dir = opendir(kDir);
  if (!dir) return 0;
  int reaped = 0;
  while (dirent* e = readdir(dir)) {
    int32_t pid = 0;
    const std::string name = e->d_name;
    if (!parse_name(name, &pid) || pid_alive(pid)) continue;
    if (unlink((kDir + name).c_str()) == 0) reaped++;
  }
  closedir(dir);
  return reaped;
}

}  // namespace lm::shm
