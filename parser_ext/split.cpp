// Statement splitting and query planning (ordinary runs vs. API TOKEN statements).
#include "parser_ext/split.hpp"

#include <optional>
#include <string>
#include <utility>

#include "parser_ext/classifier.hpp"
#include "parser_ext/lexer.hpp"

namespace tokengate::parser_ext {

namespace {

void append_ordinary(std::vector<QueryPart>& parts, StatementSpan span) {
  if (!parts.empty())
    if (auto* run = std::get_if<OrdinarySql>(&parts.back())) {
      run->span.end = span.end;  // extend the run of ordinary statements
      return;
    }
  parts.emplace_back(OrdinarySql{span});
}

ParseError too_many_statements(std::size_t at) {
  ParseError e;
  e.code = ParseErrc::program_limit_exceeded;
  e.message = "too many API TOKEN statements in one Query";
  e.detail = "A Query may hold at most " + std::to_string(max_api_token_statements_per_query) +
             " API TOKEN statements.";
  e.byte_offset = at;
  e.position = 0;
  return e;
}

}  // namespace

std::variant<std::vector<StatementSpan>, ParseError> split_statements(
    std::string_view query, const LexOptions& options) {
  std::vector<StatementSpan> spans;
  StatementSplitter splitter(query, options);
  std::size_t b = 0, e = 0;
  while (splitter.next(b, e)) spans.push_back({b, e});
  if (const LexError* err = splitter.error()) return to_parse_error(query, *err, options);
  return spans;
}

std::variant<std::vector<QueryPart>, ParseError> plan_query(std::string_view query,
                                                            const LexOptions& options) {
  std::vector<QueryPart> parts;
  const auto whole_query = [&parts, &query] {
    parts.clear();
    parts.emplace_back(OrdinarySql{{0, query.size()}});
    return std::move(parts);
  };
  if (!query_may_contain_api_token_statement(query)) return whole_query();

  StatementSplitter splitter(query, options);
  std::size_t api_statements = 0;
  std::size_t candidates = 0;  // statements handed to libpg_query
  std::optional<ParseError> deferred;
  // An error ends planning; PostgreSQL checks the whole string's encoding
  // before parsing, so a bad byte sequence further on wins.
  const auto error = [&](ParseError e) -> ParseError {
    if (auto bad = verify_encoding(query, options, splitter.position()))
      return to_parse_error(query, *bad, options);
    return e;
  };
  std::size_t b = 0, e = 0;
  while (splitter.next(b, e)) {
    const std::size_t first = splitter.first_token(), last = splitter.last_token_end();
    if (!could_be_api_token_statement(query.substr(first, last - first))) {
      append_ordinary(parts, {b, e});
      continue;
    }
    // Each candidate costs a libpg_query scan: as many as there may be API
    // TOKEN statements, whatever they turn out to be.
    if (++candidates > max_api_token_statements_per_query) return error(too_many_statements(first));
    detail::Parsed p = detail::parse_one(query, first, last, options, !deferred);
    if (auto* err = std::get_if<ParseError>(&p.result)) return error(std::move(*err));
    auto* statement = std::get_if<Statement>(&p.result);
    if (statement == nullptr) {
      append_ordinary(parts, {b, e});
      continue;
    }
    // Analysis errors come after every syntax error of the Query.
    if (p.deferred && !deferred) deferred = std::move(p.deferred);
    ++api_statements;
    parts.emplace_back(ApiTokenSql{{b, e}, std::move(*statement)});
  }
  if (const LexError* le = splitter.error()) {
    // Lexing stopped: in an API TOKEN statement (by its leading words, up to
    // the token that failed), or after one, the error is ours to report.
    const std::size_t first = splitter.statement_first_token();
    const std::size_t upto = le->token_begin > first ? le->token_begin : first;
    const bool in_candidate = could_be_api_token_statement(query.substr(first, upto - first));
    if (in_candidate) return std::get<ParseError>(detail::lexical_error(query, splitter, options));
    if (api_statements == 0) return whole_query();
    return to_parse_error(query, *le, options);
  }
  if (deferred) return std::move(*deferred);
  return parts;
}

}  // namespace tokengate::parser_ext
