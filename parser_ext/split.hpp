// Splitting a simple-protocol Query string into runs of ordinary SQL and API TOKEN statements.
#pragma once

#include <cstddef>
#include <string_view>
#include <variant>
#include <vector>

#include "parser_ext/ast.hpp"
#include "parser_ext/parser.hpp"

namespace tokengate::parser_ext {

// Bytes [begin, end) of the query string the span was computed from.
struct StatementSpan {
  std::size_t begin = 0;
  std::size_t end = 0;
  bool operator==(const StatementSpan&) const = default;
};

// Splits `query` into statements with pg_query_split_with_scanner. Spans exclude
// the separating ';' and may include leading whitespace/comments; empty
// statements (";;") are dropped. A lexical error (unterminated quote or
// comment) is returned as a 42601 ParseError positioned as PostgreSQL would.
// Caveat of the scanner: `BEGIN ATOMIC … END` bodies are split at their inner
// ';' (harmless to plan_query, which re-joins consecutive ordinary statements).
[[nodiscard]] std::variant<std::vector<StatementSpan>, ParseError> split_statements(
    std::string_view query);

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

// Plans a simple-protocol Query string, in order. Fast path: when
// query_may_contain_api_token_statement() is false (almost all queries) the
// result is one OrdinarySql covering the whole string, with no scanning; the
// caller may then forward the original message untouched. Otherwise every
// statement is classified and parsed; the first ParseError in any API TOKEN
// statement is returned instead of a plan, so that, as in PostgreSQL, a
// syntax error anywhere means nothing runs. An empty vector means the string
// holds no statement (answer EmptyQueryResponse). Spans refer to `query`; the
// result owns everything else.
[[nodiscard]] std::variant<std::vector<QueryPart>, ParseError> plan_query(
    std::string_view query);

}  // namespace tokengate::parser_ext
