// libFuzzer target `duration`: tokenstore::parse_duration, which reads the
// MAX DURATION of CREATE API TOKEN and of role policies ('30d', '1 year').
//
// Input: the duration text, any bytes.
//
// Properties besides "no crash, no UB, no leak":
// - a parsed duration is positive and at most max_token_duration;
// - format_duration of it parses back to the same number of seconds, and
//   formatting that again gives the same text;
// - an error is errc::bad_duration with a message and a DETAIL.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_support.hpp"
#include "tokenstore/duration.hpp"

using namespace tokengate::tokenstore;
using tokengate::fuzz::printable;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = parse_duration(text);
  if (!r) {
    const auto& e = r.error_value();
    FUZZ_CHECK(e.code == errc::bad_duration && !e.message.empty() && !e.detail.empty(),
               "odd error for " + printable(text) + ": " + e.message + " / " + e.detail);
    return 0;
  }
  const auto d = *r;
  FUZZ_CHECK(d.count() > 0 && d <= max_token_duration,
             printable(text) + " parses as " + std::to_string(d.count()) + " s");
  const std::string formatted = format_duration(d);
  auto again = parse_duration(formatted);
  FUZZ_CHECK(again && *again == d, printable(text) + " = " + std::to_string(d.count()) + " s, formatted \"" +
                                       formatted + "\", which does not parse back");
  FUZZ_CHECK(format_duration(*again) == formatted, "format_duration is not stable for " + formatted);
  return 0;
}
