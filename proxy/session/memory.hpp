// Memory accounting for relay buffers: what one session may hold, and what
// all sessions of the process may hold together. Sans-io; the counters are
// atomic because sessions run on several I/O threads.
#pragma once

#include <atomic>
#include <cstddef>

namespace tokengate::session {

// Bytes a relay may buffer to look at a message (Query, Parse, and the
// Bind/Describe/Execute/Close that may concern a local statement). An API
// TOKEN statement is well under a kilobyte (names ≤ 63 bytes, a comment is a
// line of text); 1 MiB leaves room for long comments and is small enough
// that a thousand sessions doing it at once stay under the process limit.
// Longer messages stream through (see Relay), so the limit costs ordinary
// queries nothing.
inline constexpr std::size_t kDefaultMaxInspectedMessage = 1024 * 1024;
// One session's relay buffers: a message being inspected, the client bytes
// held while a local answer waits, and the output not yet written (each at
// most a read buffer, since the relay stops reading a side whose peer is
// slow). Twice the inspect limit plus room for the rest.
inline constexpr std::size_t kDefaultSessionMemoryLimit = 4 * 1024 * 1024;
// Every session together. A logged-in client can make tokengate buffer up to
// its session limit; this bounds what many of them can do at once (128
// sessions at their limit), far below what a machine running PostgreSQL has.
inline constexpr std::size_t kDefaultProcessMemoryLimit = 512 * 1024 * 1024;

// The process-wide budget. A limit of 0 means no limit.
class MemoryBudget {
 public:
  explicit MemoryBudget(std::size_t limit = kDefaultProcessMemoryLimit) noexcept : limit_(limit) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  [[nodiscard]] bool try_reserve(std::size_t n) noexcept {
    std::size_t cur = used_.load(std::memory_order_relaxed);
    do {
      if (limit_ != 0 && (n > limit_ || cur > limit_ - n)) return false;
    } while (!used_.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed));
    return true;
  }
  void release(std::size_t n) noexcept { used_.fetch_sub(n, std::memory_order_relaxed); }
  std::size_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
  std::size_t limit() const noexcept { return limit_; }

 private:
  const std::size_t limit_;
  std::atomic<std::size_t> used_{0};
};

// One session's account. Everything charged is refunded at destruction.
class MemoryAccount {
 public:
  enum class Charge { ok, session_limit, process_limit };

  MemoryAccount(std::size_t limit, MemoryBudget* process) noexcept : limit_(limit), process_(process) {}
  ~MemoryAccount() {
    if (process_ != nullptr && used_ > 0) process_->release(used_);
  }
  MemoryAccount(const MemoryAccount&) = delete;
  MemoryAccount& operator=(const MemoryAccount&) = delete;

  [[nodiscard]] Charge charge(std::size_t n) noexcept {
    if (limit_ != 0 && (n > limit_ || used_ > limit_ - n)) return Charge::session_limit;
    if (process_ != nullptr && !process_->try_reserve(n)) return Charge::process_limit;
    used_ += n;
    return Charge::ok;
  }
  void refund(std::size_t n) noexcept {
    if (n > used_) n = used_;
    used_ -= n;
    if (process_ != nullptr) process_->release(n);
  }
  std::size_t used() const noexcept { return used_; }
  std::size_t limit() const noexcept { return limit_; }
  const MemoryBudget* process() const noexcept { return process_; }

 private:
  std::size_t limit_;
  MemoryBudget* process_;
  std::size_t used_ = 0;
};

}  // namespace tokengate::session
