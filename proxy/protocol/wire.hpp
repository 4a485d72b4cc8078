// Big-endian readers and writers for PostgreSQL protocol 3.0 message bodies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tokengate::protocol {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;

inline std::uint32_t load_u32(const std::uint8_t* p) noexcept {
  return (std::uint32_t(p[0]) << 24) | (std::uint32_t(p[1]) << 16) |
         (std::uint32_t(p[2]) << 8) | std::uint32_t(p[3]);
}
inline std::uint16_t load_u16(const std::uint8_t* p) noexcept {
  return std::uint16_t((p[0] << 8) | p[1]);
}
inline void store_u32(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = std::uint8_t(v >> 24);
  p[1] = std::uint8_t(v >> 16);
  p[2] = std::uint8_t(v >> 8);
  p[3] = std::uint8_t(v);
}

// Reads fields of one complete message body. Every accessor returns nullopt
// (never throws, never reads past the end) when the body is too short, so a
// parser can reject malformed input with one check per field.
class BodyReader {
 public:
  explicit BodyReader(ByteView body) noexcept : body_(body) {}

  std::optional<std::uint8_t> u8() noexcept {
    if (remaining() < 1) return std::nullopt;
    return body_[pos_++];
  }
  std::optional<std::int16_t> i16() noexcept {
    if (remaining() < 2) return std::nullopt;
    auto v = std::int16_t(load_u16(body_.data() + pos_));
    pos_ += 2;
    return v;
  }
  std::optional<std::int32_t> i32() noexcept {
    if (remaining() < 4) return std::nullopt;
    auto v = std::int32_t(load_u32(body_.data() + pos_));
    pos_ += 4;
    return v;
  }
  // A NUL-terminated string; the view points into the body.
  std::optional<std::string_view> cstr() noexcept {
    const void* nul = std::memchr(body_.data() + pos_, 0, remaining());
    if (nul == nullptr) return std::nullopt;
    auto len = std::size_t(static_cast<const std::uint8_t*>(nul) - (body_.data() + pos_));
    std::string_view s(reinterpret_cast<const char*>(body_.data() + pos_), len);
    pos_ += len + 1;
    return s;
  }
  std::optional<ByteView> bytes(std::size_t n) noexcept {
    if (remaining() < n) return std::nullopt;
    auto v = body_.subspan(pos_, n);
    pos_ += n;
    return v;
  }
  ByteView rest() noexcept {
    auto v = body_.subspan(pos_);
    pos_ = body_.size();
    return v;
  }
  std::size_t remaining() const noexcept { return body_.size() - pos_; }
  bool at_end() const noexcept { return pos_ == body_.size(); }

 private:
  ByteView body_;
  std::size_t pos_ = 0;
};

// Appends one message (tag, length, body) to a byte vector; the length is
// filled in by finish(). Several messages may be written to one vector so that
// they leave in a single write.
class MessageWriter {
 public:
  // tag 0 writes an untagged message (startup packets).
  MessageWriter(Bytes& out, char tag) : out_(out) {
    if (tag != 0) out_.push_back(std::uint8_t(tag));
    start_ = out_.size();
    out_.resize(out_.size() + 4);
  }
  MessageWriter(const MessageWriter&) = delete;
  MessageWriter& operator=(const MessageWriter&) = delete;
  ~MessageWriter() { finish(); }

  MessageWriter& u8(std::uint8_t v) {
    out_.push_back(v);
    return *this;
  }
  MessageWriter& i16(std::int16_t v) {
    out_.push_back(std::uint8_t(std::uint16_t(v) >> 8));
    out_.push_back(std::uint8_t(v));
    return *this;
  }
  MessageWriter& i32(std::int32_t v) {
    auto at = out_.size();
    out_.resize(at + 4);
    store_u32(out_.data() + at, std::uint32_t(v));
    return *this;
  }
  MessageWriter& cstr(std::string_view s) {
    out_.insert(out_.end(), s.begin(), s.end());
    out_.push_back(0);
    return *this;
  }
  MessageWriter& raw(std::string_view s) {
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  MessageWriter& raw(ByteView s) {
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  void finish() {
    if (done_) return;
    done_ = true;
    store_u32(out_.data() + start_, std::uint32_t(out_.size() - start_));
  }

 private:
  Bytes& out_;
  std::size_t start_;
  bool done_ = false;
};

inline std::string_view as_chars(ByteView b) noexcept {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
inline ByteView as_bytes(std::string_view s) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

}  // namespace tokengate::protocol
