// Recursive-descent parser of the API TOKEN statements over libpg_query's scanner.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <variant>

#include "parser_ext/ast.hpp"

namespace tokengate::parser_ext {

enum class ParseErrc {
  syntax_error,         // 42601, also lexical errors reported by the scanner
  undefined_parameter,  // 42P02 "there is no parameter $1"
  name_too_long,        // 42622 token or role name over 63 bytes
  character_not_in_repertoire,  // 22021 invalid UTF-8 or NUL (no position)
};

// The SQLSTATE for an error code. Static storage.
[[nodiscard]] constexpr std::string_view sqlstate(ParseErrc e) noexcept {
  switch (e) {
    case ParseErrc::syntax_error: return "42601";
    case ParseErrc::undefined_parameter: return "42P02";
    case ParseErrc::name_too_long: return "42622";
    case ParseErrc::character_not_in_repertoire: return "22021";
  }
  return "XX000";
}

// What the ErrorResponse should carry. `position` is PostgreSQL's: the 1-based
// character (UTF-8 code point) position in the ORIGINAL query string, and
// chars(query) + 1 for "syntax error at end of input". `byte_offset` is the same
// place in bytes. `position` is 0 when PostgreSQL reports no position
// ("cannot insert multiple commands into a prepared statement").
struct ParseError {
  ParseErrc code = ParseErrc::syntax_error;
  std::string message;
  std::string detail;  // empty: none
  std::string hint;    // empty: none
  std::size_t byte_offset = 0;
  int position = 0;
  bool operator==(const ParseError&) const = default;
};

// Not an API TOKEN statement: send it upstream unchanged.
struct NotApiTokenStatement {
  bool operator==(const NotApiTokenStatement&) const = default;
};

using ParseResult = std::variant<NotApiTokenStatement, Statement, ParseError>;

// Longest token or role name, in bytes (NAMEDATALEN - 1).
inline constexpr std::size_t max_name_bytes = 63;

// Parses the statement occupying bytes [begin, end) of `query` (e.g. a span from
// split_statements; an optional trailing `;` inside the span is accepted).
// Positions in errors refer to the whole `query`, so a statement in the middle
// of a multi-statement Query reports what PostgreSQL would. Runs the cheap
// classifier first: ordinary statements cost no scanning. The result owns all
// its data; `query` need only live during the call.
[[nodiscard]] ParseResult parse_statement(std::string_view query, std::size_t begin,
                                          std::size_t end);

// The whole string is one statement, e.g. the query of an extended-protocol
// Parse message. An API TOKEN statement followed by another statement gives
// PostgreSQL's "cannot insert multiple commands into a prepared statement"
// (42601); use plan_query for simple-protocol Query strings.
[[nodiscard]] inline ParseResult parse_statement(std::string_view statement) {
  return parse_statement(statement, 0, statement.size());
}

namespace detail {
// parse_statement without the classifier gate: scans and parses any text. For
// tests that check the classifier never rejects what the grammar would claim.
[[nodiscard]] ParseResult parse_statement_unfiltered(std::string_view query, std::size_t begin,
                                                     std::size_t end);
}  // namespace detail

// Renders a result for test failures and logs.
[[nodiscard]] std::string to_string(const ParseError& e);
[[nodiscard]] std::string to_string(const ParseResult& r);

}  // namespace tokengate::parser_ext
