// Decoding of PostgreSQL string constants and identifiers as delimited by the scanner.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tokengate::parser_ext {

// Result of decoding one literal. On failure `error` is non-empty (PostgreSQL's
// wording) and `error_offset` is the byte offset within the literal text.
struct DecodedLiteral {
  std::string value;
  std::string error;
  std::string hint;
  std::size_t error_offset = 0;
  [[nodiscard]] bool ok() const noexcept { return error.empty(); }
};

// Decodes the text of one SCONST or USCONST token exactly as it appears in the
// query: '…' with '' doubling, E'…' with backslash escapes (\b \f \n \r \t,
// octal \ooo, \xHH, \uXXXX, \UXXXXXXXX, \c), dollar quotes $tag$…$tag$, U&'…'
// with `uescape` as the escape character, and quote continuations (adjacent
// constants separated by whitespace that contains a newline). With
// standard_conforming_strings off, '…' takes backslash escapes as E'…' does.
// The text is UTF-8 (the parser converts other client encodings first).
[[nodiscard]] DecodedLiteral decode_string_constant(std::string_view text, char uescape = '\\',
                                                   bool standard_conforming_strings = true);

// Decodes an identifier token: unquoted words fold ASCII A-Z to lower case (as
// PostgreSQL's downcase_identifier does for UTF-8), "…" keeps case and turns ""
// into ", U&"…" also resolves Unicode escapes with `uescape`. No truncation.
[[nodiscard]] DecodedLiteral decode_identifier(std::string_view text, char uescape = '\\');

}  // namespace tokengate::parser_ext
