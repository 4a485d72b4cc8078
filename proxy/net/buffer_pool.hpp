// Per-thread pool of relay buffers: a session holds one only while bytes are
// in flight, so idle sessions cost no buffer memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace tokengate::net {

class BufferPool {
 public:
  // Large enough for a batch of DataRows in one read and one write; PgBouncer
  // uses 4 KiB packets and pays for it in syscalls on large results.
  static constexpr std::size_t kBufferSize = 32 * 1024;
  // Buffers grown past this (a huge Query) are freed instead of pooled.
  static constexpr std::size_t kMaxPooledCapacity = 1024 * 1024;
  // Enough for the buffers of busy sessions on one thread between reads.
  static constexpr std::size_t kMaxPooled = 64;

  // Returns a buffer of size kBufferSize.
  static std::vector<std::uint8_t> acquire() {
    auto& pool = local();
    if (pool.empty()) return std::vector<std::uint8_t>(kBufferSize);
    auto b = std::move(pool.back());
    pool.pop_back();
    b.resize(kBufferSize);
    return b;
  }
  static void release(std::vector<std::uint8_t>&& b) {
    auto& pool = local();
    if (b.capacity() > kMaxPooledCapacity || pool.size() >= kMaxPooled) {
      std::vector<std::uint8_t>().swap(b);
      return;
    }
    pool.push_back(std::move(b));
  }

 private:
  static std::vector<std::vector<std::uint8_t>>& local() {
    thread_local std::vector<std::vector<std::uint8_t>> pool;
    return pool;
  }
};

}  // namespace tokengate::net
