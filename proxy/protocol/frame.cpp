// Framing of tagged messages and startup packets (see frame.hpp).
#include "proxy/protocol/frame.hpp"

namespace tokengate::protocol {

FrameResult read_frame(ByteView data, std::size_t max_length) noexcept {
  if (data.size() < 5) return {FrameStatus::need_more, {}, 5};
  std::uint32_t len = load_u32(data.data() + 1);
  if (len < 4 || len > max_length) return {FrameStatus::bad_length, {}, 0};
  std::size_t total = std::size_t(len) + 1;
  if (data.size() < total) return {FrameStatus::need_more, {}, total};
  return {FrameStatus::complete, Frame{char(data[0]), data.subspan(5, len - 4), total}, 0};
}

FrameResult read_startup_frame(ByteView data, std::size_t max_length) noexcept {
  if (data.size() < 4) return {FrameStatus::need_more, {}, 4};
  std::uint32_t len = load_u32(data.data());
  // 8 bytes is the shortest valid packet (length + request code); like
  // PostgreSQL, the limit applies to what follows the length word.
  if (len < 8 || len - 4 > max_length) return {FrameStatus::bad_length, {}, 0};
  if (data.size() < len) return {FrameStatus::need_more, {}, len};
  return {FrameStatus::complete, Frame{0, data.subspan(0, len), len}, 0};
}

}  // namespace tokengate::protocol
