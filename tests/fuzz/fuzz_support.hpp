// Shared helpers of the libFuzzer targets: property checks that abort with a
// readable message (libFuzzer then saves the input), and printable dumps.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>
#include <string_view>

namespace tokengate::fuzz {

// Bytes as a C-like string literal: printable ASCII as is, the rest escaped,
// cut after `limit` bytes so a report stays readable.
inline std::string printable(std::string_view s, std::size_t limit = 512) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < limit; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c == '\\' || c == '"') {
      out += '\\';
      out += char(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += char(c);
    } else {
      static constexpr char hex[] = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  if (s.size() > limit) out += "…(" + std::to_string(s.size()) + " bytes)";
  return out;
}

inline std::string printable(std::span<const std::uint8_t> b, std::size_t limit = 512) {
  return printable(std::string_view(reinterpret_cast<const char*>(b.data()), b.size()), limit);
}

// A violated property is a finding like a crash: say what broke and abort, so
// that libFuzzer keeps the input as crash-<sha1> for the regression corpus.
[[noreturn]] inline void fail(const char* file, int line, const char* cond, const std::string& detail) {
  std::fprintf(stderr, "\n==== property violated at %s:%d: %s\n%s\n", file, line, cond, detail.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace tokengate::fuzz

// FUZZ_CHECK(cond, detail): `detail` (a std::string expression) is only
// evaluated when the check fails.
#define FUZZ_CHECK(cond, detail)                                                  \
  do {                                                                            \
    if (!(cond)) ::tokengate::fuzz::fail(__FILE__, __LINE__, #cond, (detail));    \
  } while (0)
