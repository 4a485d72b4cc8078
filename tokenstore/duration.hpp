// Duration strings ('30d', '1d12h', '12 hours', '1 year'): parsing with precise errors, formatting.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include "tokenstore/result.hpp"

namespace tokengate::tokenstore {

// A year is 365 days and a month 30 days.
inline constexpr std::chrono::seconds max_token_duration{100LL * 365 * 86400};
// Longest duration text looked at. Every unit spelled out once
// ('1 year 11 months 4 weeks 6 days 23 hours 59 minutes 59 seconds') is 62
// bytes; a longer text is refused before parsing, and error messages quote at
// most this much of it.
inline constexpr std::size_t max_duration_text = 100;

// Parses one or more `<integer><unit>` parts, optionally separated by spaces.
// Units (case-insensitive): s sec secs second seconds; m min mins minute
// minutes; h hr hrs hour hours; d day days; w week weeks; month months (30
// days); y yr yrs year years (365 days). The total must be positive and at most
// 100 years. Errors are errc::bad_duration with message `invalid duration "…"`
// and a DETAIL saying exactly what is wrong; a text over max_duration_text
// bytes is refused unparsed, quoted cut short.
[[nodiscard]] result<std::chrono::seconds> parse_duration(std::string_view text);

// Compact canonical form, largest units first: 365d, 1d12h, 1h30m, 45s.
[[nodiscard]] std::string format_duration(std::chrono::seconds d);

}  // namespace tokengate::tokenstore
