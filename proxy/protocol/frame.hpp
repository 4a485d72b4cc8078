// Framing, not parsing: finds whole messages in a byte buffer ("need more"
// otherwise), and tracks message boundaries in a stream relayed unparsed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "proxy/protocol/wire.hpp"

namespace tokengate::protocol {

// PostgreSQL refuses frontend messages over 1 GiB (PQ_LARGE_MESSAGE_LIMIT is
// MaxAllocSize - 1); a client cannot make us buffer more than that.
inline constexpr std::size_t kMaxMessageLength = 0x3fffffff;

enum class FrameStatus {
  complete,   // frame holds one whole message
  need_more,  // read at least `need` bytes in total before asking again
  bad_length, // the length field is impossible (< 4, or over the limit)
};

struct Frame {
  char tag = 0;     // 0 for untagged startup-phase packets
  ByteView body;    // points into the caller's buffer
  std::size_t size = 0;  // bytes the whole message occupies, header included
};

struct FrameResult {
  FrameStatus status;
  Frame frame;
  std::size_t need = 0;  // with need_more: total bytes needed from data.begin()
};

// One tagged message (tag byte, int32 length including itself, body).
FrameResult read_frame(ByteView data, std::size_t max_length = kMaxMessageLength) noexcept;

// One untagged startup-phase packet (int32 length including itself, body);
// `frame.body` is the whole packet, length included, for parse_startup_packet.
// `max_length` bounds the packet without its length word, as PostgreSQL's
// MAX_STARTUP_PACKET_LENGTH does; the length alone decides bad_length.
FrameResult read_startup_frame(ByteView data, std::size_t max_length) noexcept;

// Follows the message boundaries of a relayed stream chunk by chunk without
// copying bodies, so large DataRow/CopyData pass through untouched. It reports
// each message's tag as its header completes, and the body of ReadyForQuery.
class StreamTracker {
 public:
  struct Event {
    char tag;
    std::uint32_t length;  // body length
  };

  // Feeds one chunk; calls on_header(tag, body_length) for each header that
  // completes inside it, and on_ready(status) for each whole ReadyForQuery.
  // Returns false on an impossible length (the stream is then unusable).
  template <typename OnHeader, typename OnReady>
  bool feed(ByteView chunk, OnHeader&& on_header, OnReady&& on_ready);

 private:
  std::uint8_t header_[5]{};
  std::size_t header_have_ = 0;
  std::uint64_t body_left_ = 0;
  char tag_ = 0;
};

template <typename OnHeader, typename OnReady>
bool StreamTracker::feed(ByteView chunk, OnHeader&& on_header, OnReady&& on_ready) {
  std::size_t i = 0;
  while (i < chunk.size()) {
    if (body_left_ > 0) {
      std::size_t take = std::size_t(std::min<std::uint64_t>(body_left_, chunk.size() - i));
      // The status is the body's last byte, however the body was split.
      if (tag_ == 'Z' && take == body_left_) on_ready(char(chunk[i + take - 1]));
      body_left_ -= take;
      i += take;
      continue;
    }
    header_[header_have_++] = chunk[i++];
    if (header_have_ < 5) continue;
    header_have_ = 0;
    std::uint32_t len = load_u32(header_ + 1);
    if (len < 4 || len > kMaxMessageLength) return false;
    tag_ = char(header_[0]);
    body_left_ = len - 4;
    on_header(tag_, std::uint32_t(len - 4));
  }
  return true;
}

}  // namespace tokengate::protocol
