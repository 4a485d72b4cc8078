// Password-changing role statements: a word pre-filter, the lexer, then libpg_query's grammar.
#include "parser_ext/role_password.hpp"

#include <pg_query/pg_query.pb-c.h>

#include <cstring>
#include <string>

#include "parser_ext/encoding.hpp"
#include "parser_ext/lexical.hpp"
#include "parser_ext/parser.hpp"
#include "parser_ext/pg_query_handles.hpp"
#include "parser_ext/split.hpp"

namespace tokengate::parser_ext {

namespace {

using lexical::equals_keyword;
using lexical::npos;
using lexical::skip_space_and_comments;
using lexical::word_at;

// Leading words CREATE|ALTER then ROLE|USER|GROUP.
bool is_role_statement(std::string_view s) noexcept {
  std::size_t i = skip_space_and_comments(s, 0);
  if (i == npos) return false;
  const std::string_view verb = word_at(s, i);
  if (!equals_keyword(verb, "create") && !equals_keyword(verb, "alter")) return false;
  i = skip_space_and_comments(s, i + verb.size());
  if (i == npos) return false;
  const std::string_view object = word_at(s, i);
  return equals_keyword(object, "role") || equals_keyword(object, "user") ||
         equals_keyword(object, "group");
}

bool has_password_option(PgQuery__Node* const* options, std::size_t n) noexcept {
  for (std::size_t k = 0; k < n; ++k) {
    const PgQuery__Node* o = options[k];
    if (o != nullptr && o->node_case == PG_QUERY__NODE__NODE_DEF_ELEM &&
        o->def_elem != nullptr && o->def_elem->defname != nullptr &&
        std::strcmp(o->def_elem->defname, "password") == 0)
      return true;
  }
  return false;
}

// One candidate statement, [begin, end) of the Query.
bool statement_sets_password(std::string_view query, std::size_t begin, std::size_t end,
                             const LexOptions& options) {
  if (end - begin > max_api_token_statement_bytes) return true;  // too long to parse: refuse
  std::string utf8;
  if (encoding::to_utf8(options.encoding, query.substr(begin, end - begin), utf8)) return true;
  const ScannerSettings settings(options.standard_conforming_strings);
  const ParseTree tree = ParseTree::parse(utf8.c_str());
  if (tree.error() != nullptr) return true;  // PostgreSQL's grammar might differ: refuse
  for (const PgQuery__RawStmt* raw : tree.statements()) {
    const PgQuery__Node* n = raw != nullptr ? raw->stmt : nullptr;
    if (n == nullptr) continue;
    if (n->node_case == PG_QUERY__NODE__NODE_CREATE_ROLE_STMT && n->create_role_stmt != nullptr &&
        has_password_option(n->create_role_stmt->options, n->create_role_stmt->n_options))
      return true;
    if (n->node_case == PG_QUERY__NODE__NODE_ALTER_ROLE_STMT && n->alter_role_stmt != nullptr &&
        has_password_option(n->alter_role_stmt->options, n->alter_role_stmt->n_options))
      return true;
  }
  return false;
}

}  // namespace

bool query_may_change_role_password(std::string_view s) noexcept {
  // Every such statement has the keyword PASSWORD, which must be unquoted
  // ("password" quoted is an unknown role option). Find the letters "sw"
  // (rare in SQL), then check the whole word around them: "pas|sw|ord".
  constexpr std::string_view word = "password";
  const std::size_t n = s.size();
  const auto word_at_sw = [s, n, word](std::size_t i) noexcept {
    if (i < 3 || i + 5 > n) return false;
    const std::size_t b = i - 3;
    if (!equals_keyword(s.substr(b, word.size()), word)) return false;
    if (b > 0 && lexical::is_ident_cont(s[b - 1])) return false;
    return !(b + word.size() < n && lexical::is_ident_cont(s[b + word.size()]));
  };
  // Blocks without an "sw" are skipped with a branch-free OR that the
  // compiler vectorises, as in query_may_contain_api_token_statement.
  constexpr std::size_t block = 32;
  std::size_t i = 0;
  for (; i + block + 1 <= n; i += block) {
    unsigned hit = 0;
    for (std::size_t k = 0; k < block; ++k)
      hit |= static_cast<unsigned>(((s[i + k] | 0x20) == 's') & ((s[i + k + 1] | 0x20) == 'w'));
    if (hit == 0) continue;
    for (std::size_t k = 0; k < block; ++k)
      if ((s[i + k] | 0x20) == 's' && word_at_sw(i + k)) return true;
  }
  for (; i < n; ++i)
    if ((s[i] | 0x20) == 's' && word_at_sw(i)) return true;
  return false;
}

bool changes_role_password(std::string_view sql, const LexOptions& options) {
  if (!query_may_change_role_password(sql)) return false;
  StatementSplitter splitter(sql, options);
  std::size_t b = 0, e = 0;
  std::size_t candidates = 0;
  while (splitter.next(b, e)) {
    const std::size_t first = splitter.first_token(), last = splitter.last_token_end();
    const std::string_view text = sql.substr(first, last - first);
    if (!is_role_statement(text) || !query_may_change_role_password(text)) continue;
    // Each candidate costs a parse; a Query with this many role statements
    // that mention PASSWORD is refused rather than parsed at length.
    if (++candidates > max_api_token_statements_per_query) return true;
    if (statement_sets_password(sql, first, last, options)) return true;
  }
  if (const LexError* le = splitter.error()) {
    // A client encoding tokengate does not know: it cannot tell, so refuse.
    if (le->code == LexErrc::unsupported_encoding) return true;
    // Otherwise PostgreSQL rejects the whole Query and runs nothing; still,
    // refuse a role statement that breaks off while being lexed.
    const std::size_t first = splitter.statement_first_token();
    if (first < sql.size() && is_role_statement(sql.substr(first))) return true;
  }
  return false;
}

}  // namespace tokengate::parser_ext
