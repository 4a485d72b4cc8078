// Byte builders for protocol tests, and a Catch2 printer that shows byte
// strings as decoded messages, so a failed comparison reads like a trace.
#pragma once

#include <catch2/catch.hpp>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tokengate::test {

using Bytes = std::vector<std::uint8_t>;

inline void put_i32(Bytes& b, std::int32_t v) {
  auto u = std::uint32_t(v);
  for (int s = 24; s >= 0; s -= 8) b.push_back(std::uint8_t(u >> s));
}
inline void put_i16(Bytes& b, std::int16_t v) {
  b.push_back(std::uint8_t(std::uint16_t(v) >> 8));
  b.push_back(std::uint8_t(v));
}
inline void put_str(Bytes& b, std::string_view s) { b.insert(b.end(), s.begin(), s.end()); }
inline void put_cstr(Bytes& b, std::string_view s) {
  put_str(b, s);
  b.push_back(0);
}

// A tagged message: tag, int32 length (including itself), body.
inline Bytes msg(char tag, const Bytes& body) {
  Bytes b{std::uint8_t(tag)};
  put_i32(b, std::int32_t(body.size() + 4));
  b.insert(b.end(), body.begin(), body.end());
  return b;
}
inline Bytes body_cstrs(std::initializer_list<std::string_view> parts) {
  Bytes b;
  for (auto p : parts) put_cstr(b, p);
  return b;
}
inline Bytes body_i32s(std::initializer_list<std::int32_t> parts) {
  Bytes b;
  for (auto p : parts) put_i32(b, p);
  return b;
}
// An untagged startup-phase packet: int32 length, code, payload.
inline Bytes startup_packet(std::int32_t code, const Bytes& payload = {}) {
  Bytes b;
  put_i32(b, std::int32_t(payload.size() + 8));
  put_i32(b, code);
  b.insert(b.end(), payload.begin(), payload.end());
  return b;
}
inline Bytes startup_params(std::initializer_list<std::pair<std::string_view, std::string_view>> params) {
  Bytes b;
  for (auto [k, v] : params) {
    put_cstr(b, k);
    put_cstr(b, v);
  }
  b.push_back(0);
  return b;
}
inline Bytes concat(std::initializer_list<Bytes> parts) {
  Bytes out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}
// ErrorResponse fields as tokengate writes them (S, V, C, M[, D, H, P]).
inline Bytes error_response(std::string_view severity, std::string_view sqlstate,
                            std::string_view message, char tag = 'E') {
  Bytes body;
  body.push_back('S'); put_cstr(body, severity);
  body.push_back('V'); put_cstr(body, severity);
  body.push_back('C'); put_cstr(body, sqlstate);
  body.push_back('M'); put_cstr(body, message);
  body.push_back(0);
  return msg(tag, body);
}

// Renders bytes as a sequence of tagged messages where they frame cleanly:
//   R(len=8)[00 00 00 03] Z(len=5)"I"
inline std::string describe(const Bytes& b) {
  std::ostringstream os;
  std::size_t i = 0;
  auto printable = [](std::uint8_t c) { return c >= 0x20 && c < 0x7f; };
  while (i < b.size()) {
    if (b.size() - i >= 5 && printable(b[i])) {
      std::uint32_t len = (std::uint32_t(b[i + 1]) << 24) | (b[i + 2] << 16) | (b[i + 3] << 8) | b[i + 4];
      if (len >= 4 && i + 1 + len <= b.size()) {
        os << char(b[i]) << "(len=" << len << ")[";
        for (std::size_t j = i + 5; j < i + 1 + len; ++j) {
          if (printable(b[j])) os << char(b[j]);
          else {
            char hex[5];
            std::snprintf(hex, sizeof hex, "\\x%02x", b[j]);
            os << hex;
          }
        }
        os << "] ";
        i += 1 + len;
        continue;
      }
    }
    char hex[5];
    std::snprintf(hex, sizeof hex, "\\x%02x", b[i]);
    os << hex;
    ++i;
  }
  return os.str();
}

}  // namespace tokengate::test

namespace Catch {
template <>
struct StringMaker<std::vector<std::uint8_t>> {
  static std::string convert(const std::vector<std::uint8_t>& b) { return tokengate::test::describe(b); }
};
}  // namespace Catch
