// Recursive-descent parser of the API TOKEN statements over libpg_query's scanner.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "parser_ext/ast.hpp"
#include "parser_ext/errors.hpp"
#include "parser_ext/lexer.hpp"

namespace tokengate::parser_ext {

// Not an API TOKEN statement: send it upstream unchanged.
struct NotApiTokenStatement {
  bool operator==(const NotApiTokenStatement&) const = default;
};

using ParseResult = std::variant<NotApiTokenStatement, Statement, ParseError>;

// Longest token or role name, in bytes (NAMEDATALEN - 1).
inline constexpr std::size_t max_name_bytes = 63;

// Longest API TOKEN statement the pre-parser parses, in bytes from its first
// token to the end of its last: only this much of a Query is ever copied or
// handed to libpg_query (which needs several times the text's size). The
// longest useful statement is a 4,096-byte comment written entirely in
// escapes (4 bytes per byte, E'\xNN'): 16 KiB plus names; 64 KiB leaves room.
// Longer candidates are 54000 "API TOKEN statement is too long".
inline constexpr std::size_t max_api_token_statement_bytes = 64 * 1024;

// Parses the statement occupying bytes [begin, end) of `query` (e.g. a span from
// split_statements; an optional trailing `;` inside the span is accepted),
// lexed as PostgreSQL would with the session's settings. Positions in errors
// refer to the whole `query`, so a statement in the middle of a
// multi-statement Query reports what PostgreSQL would. Runs the cheap
// classifier first: ordinary statements cost no scanning. Strings in the
// result are UTF-8 whatever the client encoding (converted as PostgreSQL
// would convert them for a UTF-8 server); error texts are in the client
// encoding. The result owns all its data; `query` need only live during the
// call. Memory: O(1) beyond max_api_token_statement_bytes times a constant,
// whatever the size of `query`. Never throws for any input bytes other than
// std::bad_alloc.
[[nodiscard]] ParseResult parse_statement(std::string_view query, std::size_t begin,
                                          std::size_t end, const LexOptions& options = {});

// The whole string is one statement, e.g. the query of an extended-protocol
// Parse message. An API TOKEN statement followed by another statement gives
// PostgreSQL's "cannot insert multiple commands into a prepared statement"
// (42601); use plan_query for simple-protocol Query strings.
[[nodiscard]] inline ParseResult parse_statement(std::string_view statement,
                                                 const LexOptions& options = {}) {
  return parse_statement(statement, 0, statement.size(), options);
}

namespace detail {
// parse_statement without the classifier gate: scans and parses any text. For
// tests that check the classifier never rejects what the grammar would claim.
[[nodiscard]] ParseResult parse_statement_unfiltered(std::string_view query, std::size_t begin,
                                                     std::size_t end,
                                                     const LexOptions& options = {});

// One statement's grammar. `deferred` holds an error PostgreSQL raises only
// after parsing the whole Query (42P02, 42622, conflicting options), so that
// callers can put syntax errors elsewhere in the Query first.
struct Parsed {
  ParseResult result;
  std::optional<ParseError> deferred;
};
// Parses bytes [begin, end) of `query`: one statement (no `;` outside
// parentheses), from its first token to the end of its last, as the
// StatementSplitter delimits it. With collect_deferred false no deferred
// error is built (a caller that already has one saves the pass over the
// Query that its position costs).
[[nodiscard]] Parsed parse_one(std::string_view query, std::size_t begin, std::size_t end,
                               const LexOptions& options, bool collect_deferred = true);
// The error for a Query whose lexing stopped inside a candidate statement:
// the lexer's error, or a syntax error the grammar meets before that token.
[[nodiscard]] ParseResult lexical_error(std::string_view query, const StatementSplitter& splitter,
                                        const LexOptions& options);
}  // namespace detail

// Renders a result for test failures and logs.
[[nodiscard]] std::string to_string(const ParseResult& r);

}  // namespace tokengate::parser_ext
