// Splitting a simple-protocol Query string into runs of ordinary SQL and API TOKEN statements.
#pragma once

#include <cstddef>
#include <string_view>
#include <variant>
#include <vector>

#include "parser_ext/ast.hpp"
#include "parser_ext/lexer.hpp"
#include "parser_ext/parser.hpp"

namespace tokengate::parser_ext {

// Bytes [begin, end) of the query string the span was computed from.
struct StatementSpan {
  std::size_t begin = 0;
  std::size_t end = 0;
  bool operator==(const StatementSpan&) const = default;
};

// Most API TOKEN statements in one Query, counting every statement whose
// leading words make it a candidate (each costs a libpg_query scan). Scripts
// and psql sessions send a handful; the bound keeps a plan's memory (each
// statement's decoded strings are at most max_api_token_statement_bytes) to a
// few MiB, and its time to milliseconds, whatever the Query's size.
// More are 54000 "too many API TOKEN statements in one Query".
inline constexpr std::size_t max_api_token_statements_per_query = 64;

// Splits `query` into statements at the `;` tokens outside parentheses,
// lexing as PostgreSQL would with the session's settings (see
// StatementSplitter in lexer.hpp). Spans exclude the separating ';' and may
// include leading and trailing whitespace and comments; empty statements
// (";;") are dropped. A lexical error (unterminated quote or comment, a byte
// sequence the client encoding rejects, …) is returned as the ParseError
// PostgreSQL would send. Caveat: `BEGIN ATOMIC … END` bodies are split at
// their inner ';' (harmless to plan_query, see StatementSplitter). The vector
// has one element per statement: for untrusted input of any size use
// StatementSplitter, which needs no memory per statement.
[[nodiscard]] std::variant<std::vector<StatementSpan>, ParseError> split_statements(
    std::string_view query, const LexOptions& options = {});

// One or more consecutive ordinary statements: send
// query.substr(span.begin, span.end - span.begin) upstream as one Query.
struct OrdinarySql {
  StatementSpan span;
  bool operator==(const OrdinarySql&) const = default;
};
// An API TOKEN statement to run locally.
struct ApiTokenSql {
  StatementSpan span;
  Statement statement;
  bool operator==(const ApiTokenSql&) const = default;
};
using QueryPart = std::variant<OrdinarySql, ApiTokenSql>;

// Plans a simple-protocol Query string, in order, lexed as PostgreSQL lexes
// it under the session's settings. Fast path: when
// query_may_contain_api_token_statement() is false (almost all queries) the
// result is one OrdinarySql covering the whole string, with no scanning; the
// caller then forwards the original message untouched. Otherwise every
// statement is classified and API TOKEN candidates are parsed.
//
// - The first error in any API TOKEN statement is returned instead of a plan,
//   so that, as in PostgreSQL, a syntax error anywhere means nothing runs.
// - A lexical error (unterminated literal, invalid byte sequence, …) in or
//   after an API TOKEN statement is returned likewise. One with no API TOKEN
//   statement before it gives a plan of one OrdinarySql covering the whole
//   string: PostgreSQL reports it, exactly, and runs nothing.
// - An empty vector means the string holds no statement (answer
//   EmptyQueryResponse).
//
// Memory: O(number of API TOKEN statements), never O(query size): the lexer
// keeps a few offsets, and only candidate statements of at most
// max_api_token_statement_bytes are copied or parsed. Spans refer to `query`;
// the result owns everything else.
[[nodiscard]] std::variant<std::vector<QueryPart>, ParseError> plan_query(
    std::string_view query, const LexOptions& options = {});

}  // namespace tokengate::parser_ext
