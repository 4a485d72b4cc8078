// Framing of the client's messages after login. Query and Parse are made
// whole (the statements they carry may be API TOKEN statements for tokengate
// itself); every other message, however large (CopyData, Bind), streams
// through as it arrives without being buffered whole.
#pragma once

#include <cstddef>
#include <cstdint>

#include "proxy/protocol/frame.hpp"

namespace tokengate::session {

class ClientStream {
 public:
  struct Scan {
    std::size_t forward = 0;  // bytes from the front to write upstream as they are
    std::size_t need = 0;     // >0: a message to inspect needs this many bytes buffered
    bool terminate = false;   // a Terminate message ends within `forward`
    bool bad_length = false;  // a length field is impossible: close with 08P01
  };

  // Scans bytes received and not yet forwarded (the driver drops the first
  // `forward` bytes after writing them, and keeps the rest for the next scan).
  // `on_inspect(frame)` is called for each whole Query/Parse message inside
  // the forwarded range.
  template <typename OnInspect>
  Scan scan(protocol::ByteView data, OnInspect&& on_inspect);

  static constexpr bool needs_inspection(char tag) noexcept {
    return tag == protocol::frontend_tag::Query || tag == protocol::frontend_tag::Parse;
  }

 private:
  std::uint64_t passthrough_left_ = 0;  // bytes of the current streamed message not yet seen
};

template <typename OnInspect>
ClientStream::Scan ClientStream::scan(protocol::ByteView data, OnInspect&& on_inspect) {
  Scan s;
  std::size_t pos = 0;
  while (pos < data.size()) {
    if (passthrough_left_ > 0) {
      auto take = std::size_t(std::min<std::uint64_t>(passthrough_left_, data.size() - pos));
      passthrough_left_ -= take;
      pos += take;
      continue;
    }
    if (data.size() - pos < 5) break;
    char tag = char(data[pos]);
    std::uint32_t len = protocol::load_u32(data.data() + pos + 1);
    if (len < 4 || len > protocol::kMaxMessageLength) {
      s.bad_length = true;
      break;
    }
    std::size_t total = std::size_t(len) + 1;
    if (needs_inspection(tag)) {
      if (data.size() - pos < total) {
        s.need = total;
        break;
      }
      on_inspect(protocol::Frame{tag, data.subspan(pos + 5, len - 4), total});
      pos += total;
      continue;
    }
    if (tag == protocol::frontend_tag::Terminate) {
      // Nothing after Terminate matters; forward it and stop.
      s.terminate = true;
      pos += std::min(total, data.size() - pos);
      break;
    }
    passthrough_left_ = total;
  }
  s.forward = pos;
  return s;
}

}  // namespace tokengate::session
