// Statement splitting and query planning (ordinary runs vs. API TOKEN statements).
#include "parser_ext/split.hpp"

#include <string>
#include <utility>

#include "parser_ext/classifier.hpp"
#include "parser_ext/lexical.hpp"
#include "parser_ext/pg_query_handles.hpp"

namespace tokengate::parser_ext {

std::variant<std::vector<StatementSpan>, ParseError> split_statements(std::string_view query) {
  const std::string copy(query);  // NUL-terminated for libpg_query
  const SplitResult split = SplitResult::split_with_scanner(copy.c_str());
  if (const PgQueryError* e = split.error()) {
    ParseError err;
    err.code = ParseErrc::syntax_error;
    err.message = e->message != nullptr ? e->message : "scanner error";
    // cursorpos is already PostgreSQL's 1-based character position in `query`.
    err.position = e->cursorpos > 0 ? e->cursorpos : 1;
    int chars = 1;
    err.byte_offset = query.size();
    for (std::size_t k = 0; k < query.size(); ++k) {
      if ((static_cast<unsigned char>(query[k]) & 0xC0) == 0x80) continue;
      if (chars == err.position) {
        err.byte_offset = k;
        break;
      }
      ++chars;
    }
    return err;
  }
  std::vector<StatementSpan> spans;
  spans.reserve(split.statements().size());
  for (const PgQuerySplitStmt* s : split.statements()) {
    const auto b = static_cast<std::size_t>(s->stmt_location);
    spans.push_back({b, b + static_cast<std::size_t>(s->stmt_len)});
  }
  return spans;
}

std::variant<std::vector<QueryPart>, ParseError> plan_query(std::string_view query) {
  std::vector<QueryPart> parts;
  if (!query_may_contain_api_token_statement(query)) {
    parts.emplace_back(OrdinarySql{{0, query.size()}});
    return parts;
  }
  auto split = split_statements(query);
  if (auto* e = std::get_if<ParseError>(&split)) return std::move(*e);
  for (const StatementSpan& span : std::get<std::vector<StatementSpan>>(split)) {
    ParseResult r = parse_statement(query, span.begin, span.end);
    if (auto* e = std::get_if<ParseError>(&r)) return std::move(*e);
    if (auto* s = std::get_if<Statement>(&r)) {
      parts.emplace_back(ApiTokenSql{span, std::move(*s)});
      continue;
    }
    if (!parts.empty()) {
      if (auto* run = std::get_if<OrdinarySql>(&parts.back())) {
        run->span.end = span.end;  // extend the run of ordinary statements
        continue;
      }
    }
    parts.emplace_back(OrdinarySql{span});
  }
  return parts;
}

}  // namespace tokengate::parser_ext
