// Leading-keyword classifier and whole-query pre-filter for API TOKEN statements.
#include "parser_ext/classifier.hpp"

#include "parser_ext/lexical.hpp"

namespace tokengate::parser_ext {

namespace {

using lexical::equals_keyword;
using lexical::npos;
using lexical::skip_space_and_comments;
using lexical::word_at;

// The next word after skipping whitespace/comments from i; `next` gets the index
// just past it. Empty if there is no word there.
std::string_view next_word(std::string_view s, std::size_t i, std::size_t& next) noexcept {
  i = skip_space_and_comments(s, i);
  if (i == npos) return {};
  const std::string_view w = word_at(s, i);
  next = i + w.size();
  return w;
}

// Skips one role name token: a word, "quoted" or U&"quoted". npos if none.
std::size_t skip_role(std::string_view s, std::size_t i) noexcept {
  i = skip_space_and_comments(s, i);
  if (i == npos || i >= s.size()) return npos;
  std::size_t q = npos;
  if (s[i] == '"') {
    q = i;
  } else if ((s[i] == 'u' || s[i] == 'U') && i + 2 < s.size() && s[i + 1] == '&' &&
             s[i + 2] == '"') {
    q = i + 2;
  }
  if (q == npos) {
    const std::string_view w = word_at(s, i);
    return w.empty() ? npos : i + w.size();
  }
  for (std::size_t k = q + 1; k < s.size(); ++k) {
    if (s[k] == '"') {
      if (k + 1 < s.size() && s[k + 1] == '"') {
        ++k;
        continue;
      }
      return k + 1;
    }
  }
  return npos;
}

}  // namespace

bool could_be_api_token_statement(std::string_view s) noexcept {
  // Empty statements before it (";; CREATE …") are dropped by PostgreSQL's
  // grammar, so the statement may start after them.
  std::size_t start = skip_space_and_comments(s, 0);
  while (start != npos && start < s.size() && s[start] == ';')
    start = skip_space_and_comments(s, start + 1);
  if (start == npos) return false;
  const std::string_view first = word_at(s, start);
  std::size_t i = start + first.size();
  // Every candidate starts with one of four keywords of 4-6 letters.
  if (first.size() < 4 || first.size() > 6) return false;
  const char c0 = static_cast<char>(first[0] | 0x20);
  if (c0 == 'c') {
    if (!equals_keyword(first, "create")) return false;
    return equals_keyword(next_word(s, i, i), "api");
  }
  if (c0 == 'd') {
    if (!equals_keyword(first, "drop")) return false;
    const std::string_view w = next_word(s, i, i);
    if (equals_keyword(w, "api")) return true;
    return equals_keyword(w, "all") && equals_keyword(next_word(s, i, i), "api");
  }
  if (c0 == 's') {
    if (!equals_keyword(first, "show")) return false;
    const std::string_view w = next_word(s, i, i);
    if (!equals_keyword(w, "api") && !equals_keyword(w, "tokengate")) return false;
    // `SHOW api` and `SHOW api.setting` are ordinary (custom GUCs).
    i = skip_space_and_comments(s, i);
    return i != npos && i < s.size() && s[i] != ';' && s[i] != '.';
  }
  if (c0 == 'a') {
    if (!equals_keyword(first, "alter")) return false;
    const std::string_view w = next_word(s, i, i);
    if (equals_keyword(w, "api")) return true;
    if (!equals_keyword(w, "user") && !equals_keyword(w, "role")) return false;
    i = skip_role(s, i);
    if (i == npos) return false;
    const std::string_view verb = next_word(s, i, i);
    if (!equals_keyword(verb, "set") && !equals_keyword(verb, "reset")) return false;
    // `SET api.x = …`, `RESET api` are ordinary: require API TOKEN.
    return equals_keyword(next_word(s, i, i), "api") &&
           equals_keyword(next_word(s, i, i), "token");
  }
  return false;
}

TxControl classify_transaction_control(std::string_view s) noexcept {
  std::size_t i = 0;
  const std::string_view first = next_word(s, 0, i);
  if (first.size() < 3 || first.size() > 9) return TxControl::none;
  // After COMMIT/END/ROLLBACK/ABORT [WORK|TRANSACTION]: AND [NO] CHAIN.
  const auto chain = [&s](std::size_t at, TxControl plain, TxControl chained) noexcept {
    std::size_t j = at;
    if (!equals_keyword(next_word(s, j, j), "and")) return plain;
    const std::string_view w = next_word(s, j, j);
    return equals_keyword(w, "chain") ? chained : plain;
  };
  // Skips an optional WORK or TRANSACTION after `at`.
  const auto opt_transaction = [&s](std::size_t at) noexcept {
    std::size_t j = at;
    const std::string_view w = next_word(s, j, j);
    return (equals_keyword(w, "work") || equals_keyword(w, "transaction")) ? j : at;
  };
  if (equals_keyword(first, "begin")) return TxControl::begin;
  if (equals_keyword(first, "start"))
    return equals_keyword(next_word(s, i, i), "transaction") ? TxControl::begin : TxControl::none;
  if (equals_keyword(first, "savepoint")) return TxControl::savepoint;
  if (equals_keyword(first, "release")) return TxControl::release_savepoint;
  if (equals_keyword(first, "end"))
    return chain(opt_transaction(i), TxControl::commit, TxControl::commit_and_chain);
  if (equals_keyword(first, "abort"))
    return chain(opt_transaction(i), TxControl::rollback, TxControl::rollback_and_chain);
  if (equals_keyword(first, "commit")) {
    std::size_t j = i;
    if (equals_keyword(next_word(s, j, j), "prepared")) return TxControl::commit_prepared;
    return chain(opt_transaction(i), TxControl::commit, TxControl::commit_and_chain);
  }
  if (equals_keyword(first, "rollback")) {
    std::size_t j = i;
    if (equals_keyword(next_word(s, j, j), "prepared")) return TxControl::rollback_prepared;
    j = opt_transaction(i);
    std::size_t k = j;
    if (equals_keyword(next_word(s, k, k), "to")) return TxControl::rollback_to_savepoint;
    return chain(j, TxControl::rollback, TxControl::rollback_and_chain);
  }
  if (equals_keyword(first, "prepare")) {
    if (!equals_keyword(next_word(s, i, i), "transaction")) return TxControl::none;
    // PREPARE TRANSACTION 'gid' versus PREPARE transaction [(types)] AS …
    std::size_t j = skip_space_and_comments(s, i);
    if (j == npos || j >= s.size() || s[j] == '(') return TxControl::none;
    std::size_t k = j;
    if (equals_keyword(next_word(s, k, k), "as")) return TxControl::none;
    return TxControl::prepare_transaction;
  }
  return TxControl::none;
}

std::string_view tx_control_name(TxControl t) noexcept {
  switch (t) {
    case TxControl::none: return "none";
    case TxControl::begin: return "begin";
    case TxControl::commit: return "commit";
    case TxControl::rollback: return "rollback";
    case TxControl::commit_and_chain: return "commit_and_chain";
    case TxControl::rollback_and_chain: return "rollback_and_chain";
    case TxControl::rollback_to_savepoint: return "rollback_to_savepoint";
    case TxControl::savepoint: return "savepoint";
    case TxControl::release_savepoint: return "release_savepoint";
    case TxControl::prepare_transaction: return "prepare_transaction";
    case TxControl::commit_prepared: return "commit_prepared";
    case TxControl::rollback_prepared: return "rollback_prepared";
  }
  return "?";
}

bool query_may_contain_api_token_statement(std::string_view s) noexcept {
  // SHOW TOKENGATE INSTANCES has no `api`: it is recognised as the first
  // statement of a Query only (a keyword or two, as for every statement).
  if (could_be_api_token_statement(s)) return true;
  const std::size_t n = s.size();
  // Is there a bare `api` whose middle letter is at i?
  const auto api_at = [s, n](std::size_t i) noexcept {
    if (i == 0 || i + 1 >= n) return false;
    if ((s[i - 1] | 0x20) != 'a' || (s[i + 1] | 0x20) != 'i') return false;
    if (i >= 2 && lexical::is_ident_cont(s[i - 2])) return false;
    return !(i + 2 < n && lexical::is_ident_cont(s[i + 2]));
  };
  // Blocks without a "pi" (any case; rarer in SQL than any single letter)
  // are skipped with a branch-free OR that the compiler vectorises.
  constexpr std::size_t block = 32;
  std::size_t i = 0;
  for (; i + block + 1 <= n; i += block) {
    unsigned hit = 0;
    for (std::size_t k = 0; k < block; ++k)
      hit |= static_cast<unsigned>(((s[i + k] | 0x20) == 'p') & ((s[i + k + 1] | 0x20) == 'i'));
    if (hit == 0) continue;
    for (std::size_t k = 0; k < block; ++k)
      if ((s[i + k] | 0x20) == 'p' && api_at(i + k)) return true;
  }
  for (; i < n; ++i)
    if ((s[i] | 0x20) == 'p' && api_at(i)) return true;
  return false;
}

}  // namespace tokengate::parser_ext
