// InputBuffer: bytes received from a peer and not yet used, for the drivers of
// the login machines. It grows with the bytes that arrive, never with a length
// a peer announced, up to a fixed limit; bytes it drops are zeroed first,
// since during login they may be a password.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <span>

#include "proxy/auth/secret.hpp"
#include "proxy/protocol/wire.hpp"

namespace tokengate::protocol {

class InputBuffer {
 public:
  // Reads ask for at least this much room (one read usually holds a whole
  // login message) and grow by doubling from here.
  static constexpr std::size_t kChunk = 4096;

  explicit InputBuffer(std::size_t limit) : limit_(limit) {}
  ~InputBuffer() { auth::wipe(buf_.data(), buf_.size()); }
  InputBuffer(const InputBuffer&) = delete;
  InputBuffer& operator=(const InputBuffer&) = delete;

  [[nodiscard]] ByteView data() const noexcept { return ByteView(buf_.data(), have_); }
  [[nodiscard]] std::size_t size() const noexcept { return have_; }
  [[nodiscard]] bool full() const noexcept { return have_ >= limit_; }

  // Room to read into: at least kChunk bytes (or what is left below the
  // limit); empty when the limit is reached. Valid until the next call.
  std::span<std::uint8_t> prepare() {
    if (full()) return {};
    const std::size_t want = std::min(limit_, have_ + kChunk);
    if (buf_.size() < want) grow(std::min(limit_, std::max(want, buf_.size() * 2)));
    return std::span<std::uint8_t>(buf_.data() + have_, buf_.size() - have_);
  }
  void commit(std::size_t n) noexcept { have_ += n; }

  // Drops `n` bytes from the front, zeroing what they leave behind.
  void consume(std::size_t n) noexcept {
    n = std::min(n, have_);
    // Nothing to drop: a buffer that never read has no storage, and memmove
    // from a null pointer is undefined even for zero bytes.
    if (n == 0) return;
    std::memmove(buf_.data(), buf_.data() + n, have_ - n);
    auth::wipe(buf_.data() + (have_ - n), n);
    have_ -= n;
  }

  // The unused bytes (for the next phase), leaving the buffer empty.
  Bytes take() {
    Bytes out(buf_.begin(), buf_.begin() + std::ptrdiff_t(have_));
    consume(have_);
    return out;
  }

 private:
  void grow(std::size_t size) {
    Bytes bigger(size);
    std::copy_n(buf_.begin(), have_, bigger.begin());
    auth::wipe(buf_.data(), buf_.size());
    buf_.swap(bigger);
  }

  std::size_t limit_;
  Bytes buf_;
  std::size_t have_ = 0;
};

}  // namespace tokengate::protocol
