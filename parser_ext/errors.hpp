// The error the pre-parser reports for a statement or Query: SQLSTATE, PostgreSQL's text, position.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tokengate::parser_ext {

enum class ParseErrc {
  syntax_error,         // 42601, also most lexical errors of the scanner
  undefined_parameter,  // 42P02 "there is no parameter $1"
  name_too_long,        // 42622 token or role name over 63 bytes
  character_not_in_repertoire,  // 22021 invalid byte sequence for the client encoding
  untranslatable_character,     // 22P05 no equivalent in UTF-8 (the token store's encoding)
  invalid_escape_sequence,      // 22025 E'\u12'
  nonstandard_use_of_escape_character,  // 22P06 \' in a client-only encoding
  feature_not_supported,  // 0A000 U&'' with standard_conforming_strings off
  program_limit_exceeded,  // 54000 a pre-parser limit (see docs/security.md)
};

// The SQLSTATE for an error code. Static storage.
[[nodiscard]] constexpr std::string_view sqlstate(ParseErrc e) noexcept {
  switch (e) {
    case ParseErrc::syntax_error: return "42601";
    case ParseErrc::undefined_parameter: return "42P02";
    case ParseErrc::name_too_long: return "42622";
    case ParseErrc::character_not_in_repertoire: return "22021";
    case ParseErrc::untranslatable_character: return "22P05";
    case ParseErrc::invalid_escape_sequence: return "22025";
    case ParseErrc::nonstandard_use_of_escape_character: return "22P06";
    case ParseErrc::feature_not_supported: return "0A000";
    case ParseErrc::program_limit_exceeded: return "54000";
  }
  return "XX000";
}

// What the ErrorResponse should carry. `position` is PostgreSQL's: the 1-based
// character position in the ORIGINAL query string (characters of the session's
// client_encoding), and chars(query) + 1 for "syntax error at end of input".
// `byte_offset` is the same place in bytes. `position` is 0 when PostgreSQL
// reports no position (encoding errors, "cannot insert multiple commands into a
// prepared statement", limits).
struct ParseError {
  ParseErrc code = ParseErrc::syntax_error;
  std::string message;
  std::string detail;  // empty: none
  std::string hint;    // empty: none
  std::size_t byte_offset = 0;
  int position = 0;
  bool operator==(const ParseError&) const = default;
};

// Renders an error for test failures and logs.
[[nodiscard]] std::string to_string(const ParseError& e);

}  // namespace tokengate::parser_ext
