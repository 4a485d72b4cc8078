// API TOKEN grammar: a recursive-descent parser over pg_query_scan tokens.
#include "parser_ext/parser.hpp"

#include <pg_query/pg_query.pb-c.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "parser_ext/classifier.hpp"
#include "parser_ext/lexical.hpp"
#include "parser_ext/literals.hpp"
#include "parser_ext/pg_query_handles.hpp"

namespace tokengate::parser_ext {

namespace {

using lexical::char_position;
using lexical::equals_keyword;

// One significant (non-comment) token; offsets are bytes in the whole query.
struct Tok {
  int type = 0;
  int keyword_kind = 0;
  std::size_t begin = 0;
  std::size_t end = 0;
};

constexpr int tok_semicolon = ';';
constexpr int tok_dot = '.';

// libpg_query reports a wrong `end` for U&"…" and U&'…' tokens; find it ourselves.
std::size_t end_of_unicode_quoted(std::string_view s, std::size_t begin) {
  std::size_t i = begin + 2;  // U&
  if (i >= s.size()) return s.size();
  const char q = s[i];
  while (true) {
    ++i;
    while (i < s.size()) {
      if (s[i] == q) {
        if (i + 1 < s.size() && s[i + 1] == q) {
          i += 2;
          continue;
        }
        break;
      }
      ++i;
    }
    if (i >= s.size()) return s.size();
    ++i;  // closing quote
    if (q != '\'') return i;
    const std::size_t next = lexical::quote_continuation(s, i);
    if (next == lexical::npos) return i;
    i = next;
  }
}

class Parser {
 public:
  Parser(std::string_view query, std::size_t stmt_end, std::vector<Tok> toks)
      : q_(query), stmt_end_(stmt_end), t_(std::move(toks)) {}

  ParseResult run() {
    if (word(0, "create") && word(1, "api")) {
      i_ = 2;
      return finish(parse_create());
    }
    if (word(0, "alter")) {
      if (word(1, "api")) {
        i_ = 2;
        return finish(parse_alter_api_token());
      }
      if ((word(1, "user") || word(1, "role")) && !at_end(2) &&
          (word(3, "set") || word(3, "reset")) && word(4, "api") && word(5, "token")) {
        i_ = 2;
        return finish(parse_alter_role());
      }
      return NotApiTokenStatement{};
    }
    if (word(0, "drop")) {
      if (word(1, "api")) {
        i_ = 2;
        return finish(parse_drop_api_token());
      }
      if (word(1, "all") && word(2, "api")) {
        i_ = 3;
        return finish(parse_drop_all());
      }
      return NotApiTokenStatement{};
    }
    // `SHOW api` and `SHOW api.x` show (custom) settings.
    if (word(0, "show") && word(1, "api") && !at_end(2) && t_[2].type != tok_dot) {
      i_ = 2;
      return finish(parse_show());
    }
    // SHOW TOKENGATE INSTANCES; `SHOW tokengate` and `SHOW tokengate.x` are settings.
    if (word(0, "show") && word(1, "tokengate") && !at_end(2) && t_[2].type != tok_dot) {
      i_ = 2;
      if (!expect_word("instances")) return finish(std::nullopt);
      return finish(std::optional<Statement>(ShowTokengateInstances{}));
    }
    return NotApiTokenStatement{};
  }

 private:
  // --- token access ---------------------------------------------------------
  [[nodiscard]] bool at_end(std::size_t k) const noexcept {
    return i_ + k >= t_.size() || t_[i_ + k].type == tok_semicolon;
  }
  [[nodiscard]] std::string_view text(const Tok& t) const noexcept {
    return q_.substr(t.begin, t.end - t.begin);
  }
  // An unquoted word: an unquoted identifier or any keyword.
  [[nodiscard]] bool is_bare_word(const Tok& t) const noexcept {
    if (t.keyword_kind != PG_QUERY__KEYWORD_KIND__NO_KEYWORD) return true;
    return t.type == PG_QUERY__TOKEN__IDENT && q_[t.begin] != '"';
  }
  [[nodiscard]] bool word(std::size_t k, std::string_view kw) const noexcept {
    if (at_end(k)) return false;
    const Tok& t = t_[i_ + k];
    return is_bare_word(t) && equals_keyword(text(t), kw);
  }
  [[nodiscard]] bool is_string_token(std::size_t k) const noexcept {
    if (at_end(k)) return false;
    const int type = t_[i_ + k].type;
    return type == PG_QUERY__TOKEN__SCONST || type == PG_QUERY__TOKEN__USCONST ||
           type == PG_QUERY__TOKEN__PARAM;
  }
  // PostgreSQL's ColId (token names) or NonReservedWord (roles, which also
  // allow type_func_name keywords), plus $n so that it is reported as 42P02.
  [[nodiscard]] bool is_name_token(std::size_t k, bool role) const noexcept {
    if (at_end(k)) return false;
    const Tok& t = t_[i_ + k];
    if (t.type == PG_QUERY__TOKEN__IDENT || t.type == PG_QUERY__TOKEN__UIDENT ||
        t.type == PG_QUERY__TOKEN__PARAM)
      return true;
    return t.keyword_kind == PG_QUERY__KEYWORD_KIND__UNRESERVED_KEYWORD ||
           t.keyword_kind == PG_QUERY__KEYWORD_KIND__COL_NAME_KEYWORD ||
           (role && t.keyword_kind == PG_QUERY__KEYWORD_KIND__TYPE_FUNC_NAME_KEYWORD);
  }

  // --- errors ----------------------------------------------------------------
  ParseError make_error(ParseErrc code, std::string message, std::size_t byte) const {
    ParseError e;
    e.code = code;
    e.message = std::move(message);
    e.byte_offset = byte;
    e.position = char_position(q_, byte);
    return e;
  }
  // Syntax error at the current token, PostgreSQL style.
  bool syntax_error() {
    if (i_ < t_.size()) {
      const Tok& t = t_[i_];
      err_ = make_error(ParseErrc::syntax_error,
                        "syntax error at or near \"" + std::string(text(t)) + "\"", t.begin);
      return false;
    }
    // Past the statement's last token: PostgreSQL sees the ';' that follows
    // (in a multi-statement query) or the end of the whole string.
    const std::size_t j = lexical::skip_space_and_comments(q_, stmt_end_);
    if (j != lexical::npos && j < q_.size() && q_[j] == ';') {
      err_ = make_error(ParseErrc::syntax_error, "syntax error at or near \";\"", j);
    } else {
      err_ = make_error(ParseErrc::syntax_error, "syntax error at end of input", q_.size());
    }
    return false;
  }
  // Errors PostgreSQL raises after a successful raw parse: reported only if
  // the statement has no syntax error; the first one wins.
  void defer(ParseError e) {
    if (!deferred_) deferred_ = std::move(e);
  }
  void conflicting_options(std::size_t clause_at) {
    defer(make_error(ParseErrc::syntax_error, "conflicting or redundant options",
                     t_[clause_at].begin));
  }

  bool expect_word(std::string_view kw) {
    if (!word(0, kw)) return syntax_error();
    ++i_;
    return true;
  }

  // After U&"…" or U&'…': an optional UESCAPE 'c'. Sets `esc`.
  bool parse_uescape(char& esc) {
    esc = '\\';
    if (at_end(0) || t_[i_].type != PG_QUERY__TOKEN__UESCAPE) return true;
    const std::size_t uescape_at = i_;
    ++i_;
    if (at_end(0) || t_[i_].type != PG_QUERY__TOKEN__SCONST || q_[t_[i_].begin] != '\'') {
      err_ = make_error(ParseErrc::syntax_error,
                        "UESCAPE must be followed by a simple string literal",
                        at_end(0) ? t_[uescape_at].end : t_[i_].begin);
      return false;
    }
    const std::string_view lit = text(t_[i_]);
    const bool ok = lit.size() == 3 && lit[2] == '\'';
    const char c = ok ? lit[1] : '\0';
    const bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
    if (!ok || hex || c == '+' || c == '\'' || c == '"' || lexical::is_space(c)) {
      err_ = make_error(ParseErrc::syntax_error, "invalid Unicode escape character",
                        t_[i_].begin);
      return false;
    }
    esc = c;
    ++i_;
    return true;
  }

  bool decode_failed(const DecodedLiteral& d, const Tok& t) {
    err_ = make_error(ParseErrc::syntax_error, d.error, t.begin + d.error_offset);
    err_->hint = d.hint;
    return false;
  }

  bool parameter(const Tok& t) {
    defer(make_error(ParseErrc::undefined_parameter,
                     "there is no parameter " + std::string(text(t)), t.begin));
    ++i_;
    return true;
  }

  // name: token name (ColId) or role (NonReservedWord); at most 63 bytes.
  bool parse_name(std::string& out, bool role) {
    if (!is_name_token(0, role)) return syntax_error();
    const Tok t = t_[i_];
    if (t.type == PG_QUERY__TOKEN__PARAM) return parameter(t);
    ++i_;
    char esc = '\\';
    if (t.type == PG_QUERY__TOKEN__UIDENT && !parse_uescape(esc)) return false;
    DecodedLiteral d = decode_identifier(text(t), esc);
    if (!d.ok()) return decode_failed(d, t);
    if (d.value.size() > max_name_bytes) {
      ParseError e = make_error(
          ParseErrc::name_too_long,
          std::string(role ? "role" : "token") + " name \"" + d.value + "\" is too long",
          t.begin);
      e.detail = std::string(role ? "Role" : "Token") + " names are limited to " +
                 std::to_string(max_name_bytes) + " bytes.";
      defer(std::move(e));
    }
    out = std::move(d.value);
    return true;
  }

  bool parse_string(std::string& out) {
    if (!is_string_token(0)) return syntax_error();
    const Tok t = t_[i_];
    if (t.type == PG_QUERY__TOKEN__PARAM) return parameter(t);
    ++i_;
    char esc = '\\';
    if (t.type == PG_QUERY__TOKEN__USCONST && !parse_uescape(esc)) return false;
    DecodedLiteral d = decode_string_constant(text(t), esc);
    if (!d.ok()) return decode_failed(d, t);
    out = std::move(d.value);
    return true;
  }

  // FOR USER role (FOR already seen at i_).
  bool parse_for_user(std::optional<std::string>& out) {
    ++i_;  // FOR
    if (!expect_word("user")) return false;
    std::string role;
    if (!parse_name(role, true)) return false;
    out = std::move(role);
    return true;
  }
  bool parse_optional_for_user(std::optional<std::string>& out) {
    if (!word(0, "for")) return true;
    return parse_for_user(out);
  }

  // --- statements ------------------------------------------------------------
  // CREATE API TOKEN [name] { FOR USER r | MAX DURATION 'd' | COMMENT 't' }*
  std::optional<Statement> parse_create() {
    if (!expect_word("token")) return std::nullopt;
    CreateApiToken s;
    const auto clause_start = [this] {
      return word(0, "for") || (word(0, "max") && word(1, "duration")) ||
             (word(0, "comment") && is_string_token(1));
    };
    if (is_name_token(0, false) && !clause_start()) {
      std::string name;
      if (!parse_name(name, false)) return std::nullopt;
      s.name = std::move(name);
    }
    while (!at_end(0)) {
      const std::size_t clause_at = i_;
      if (word(0, "for")) {
        std::optional<std::string> role;
        if (!parse_for_user(role)) return std::nullopt;
        if (s.for_user) conflicting_options(clause_at);
        else s.for_user = std::move(role);
      } else if (word(0, "max")) {
        ++i_;
        if (!expect_word("duration")) return std::nullopt;
        std::string v;
        if (!parse_string(v)) return std::nullopt;
        if (s.max_duration) conflicting_options(clause_at);
        else s.max_duration = std::move(v);
      } else if (word(0, "comment")) {
        ++i_;
        std::string v;
        if (!parse_string(v)) return std::nullopt;
        if (s.comment) conflicting_options(clause_at);
        else s.comment = std::move(v);
      } else {
        syntax_error();
        return std::nullopt;
      }
    }
    return s;
  }

  // SHOW API TOKENS [FOR USER r | FOR ALL USERS] | SHOW API TOKEN POLICIES [FOR USER r]
  std::optional<Statement> parse_show() {
    if (word(0, "tokens")) {
      ++i_;
      ShowApiTokens s;
      if (word(0, "for")) {
        if (word(1, "all")) {
          i_ += 2;
          if (!expect_word("users")) return std::nullopt;
          s.all_users = true;
        } else if (!parse_for_user(s.for_user)) {
          return std::nullopt;
        }
      }
      return s;
    }
    if (!expect_word("token") || !expect_word("policies")) return std::nullopt;
    ShowApiTokenPolicies s;
    if (!parse_optional_for_user(s.for_user)) return std::nullopt;
    return s;
  }

  // ALTER API TOKEN name [FOR USER r] SET COMMENT { 't' | NULL }
  std::optional<Statement> parse_alter_api_token() {
    AlterApiTokenSetComment s;
    if (!expect_word("token") || !parse_name(s.name, false) ||
        !parse_optional_for_user(s.for_user) || !expect_word("set") ||
        !expect_word("comment"))
      return std::nullopt;
    if (!at_end(0) && t_[i_].type == PG_QUERY__TOKEN__NULL_P) {
      ++i_;
      return s;
    }
    std::string v;
    if (!parse_string(v)) return std::nullopt;
    s.comment = std::move(v);
    return s;
  }

  // DROP API TOKEN [IF EXISTS] name [FOR USER r]
  std::optional<Statement> parse_drop_api_token() {
    DropApiToken s;
    if (!expect_word("token")) return std::nullopt;
    if (word(0, "if") && word(1, "exists")) {
      i_ += 2;
      s.if_exists = true;
    }
    if (!parse_name(s.name, false) || !parse_optional_for_user(s.for_user)) return std::nullopt;
    return s;
  }

  // DROP ALL API TOKENS [FOR USER r]
  std::optional<Statement> parse_drop_all() {
    DropAllApiTokens s;
    if (!expect_word("tokens") || !parse_optional_for_user(s.for_user)) return std::nullopt;
    return s;
  }

  // ALTER {USER|ROLE} r {SET API TOKEN MAX DURATION 'd' | RESET API TOKEN MAX DURATION}
  std::optional<Statement> parse_alter_role() {
    std::string role;
    if (!parse_name(role, true)) return std::nullopt;
    const bool set = word(0, "set");
    ++i_;  // SET or RESET, checked by run()
    if (!expect_word("api") || !expect_word("token") || !expect_word("max") ||
        !expect_word("duration"))
      return std::nullopt;
    if (!set) return AlterRoleResetApiTokenMaxDuration{std::move(role)};
    std::string d;
    if (!parse_string(d)) return std::nullopt;
    return AlterRoleSetApiTokenMaxDuration{std::move(role), std::move(d)};
  }

  // Trailing `;`s, then nothing; then deferred (post-parse) errors.
  ParseResult finish(std::optional<Statement> s) {
    if (!s) return std::move(*err_);
    if (i_ < t_.size() && t_[i_].type != tok_semicolon) {
      syntax_error();
      return std::move(*err_);
    }
    while (i_ < t_.size() && t_[i_].type == tok_semicolon) ++i_;
    if (i_ < t_.size()) {
      // Another statement after ours in one span: only possible when the
      // caller did not split, i.e. an extended-protocol Parse.
      ParseError e;
      e.code = ParseErrc::syntax_error;
      e.message = "cannot insert multiple commands into a prepared statement";
      e.byte_offset = t_[i_].begin;
      e.position = 0;  // PostgreSQL gives no position for this one
      return e;
    }
    if (deferred_) return std::move(*deferred_);
    return std::move(*s);
  }

  std::string_view q_;
  std::size_t stmt_end_;
  std::vector<Tok> t_;
  std::size_t i_ = 0;
  std::optional<ParseError> err_;
  std::optional<ParseError> deferred_;
};

// Byte offset of the 1-based character position `pos` within s.
std::size_t byte_of_char_position(std::string_view s, int pos) {
  int chars = 1;
  for (std::size_t k = 0; k < s.size(); ++k) {
    if ((static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) continue;
    if (chars == pos) return k;
    ++chars;
  }
  return s.size();
}

}  // namespace

ParseResult parse_statement(std::string_view query, std::size_t begin, std::size_t end) {
  if (end > query.size()) end = query.size();
  if (begin > end) begin = end;
  if (!could_be_api_token_statement(query.substr(begin, end - begin)))
    return NotApiTokenStatement{};
  return detail::parse_statement_unfiltered(query, begin, end);
}

ParseResult detail::parse_statement_unfiltered(std::string_view query, std::size_t begin,
                                               std::size_t end) {
  if (end > query.size()) end = query.size();
  if (begin > end) begin = end;
  const std::string_view stmt = query.substr(begin, end - begin);
  // PostgreSQL verifies the whole query string's encoding on receipt; the
  // proxy passes bytes through, so check candidates here (UTF-8 assumed).
  if (const std::size_t bad = lexical::invalid_utf8_at(stmt); bad != lexical::npos) {
    ParseError err;
    err.code = ParseErrc::character_not_in_repertoire;
    err.message = "invalid byte sequence for encoding \"UTF8\": " +
                  lexical::invalid_utf8_bytes(stmt, bad);
    err.byte_offset = begin + bad;
    err.position = 0;
    return err;
  }
  const std::string copy(stmt);  // pg_query_scan wants a NUL-terminated string
  const ScanResult scan = ScanResult::scan(copy.c_str());
  if (const PgQueryError* e = scan.error()) {
    ParseError err;
    err.code = ParseErrc::syntax_error;
    err.message = e->message != nullptr ? e->message : "scanner error";
    if (err.message.starts_with("invalid byte sequence"))  // E'\xff', E'\0'
      err.code = ParseErrc::character_not_in_repertoire;
    err.byte_offset =
        begin + byte_of_char_position(stmt, e->cursorpos > 0 ? e->cursorpos : 1);
    err.position = e->cursorpos > 0 ? char_position(query, err.byte_offset) : 0;
    return err;
  }
  const auto raw = scan.tokens();
  std::vector<Tok> toks;
  toks.reserve(raw.size());
  for (std::size_t r = 0; r < raw.size(); ++r) {
    const PgQuery__ScanToken* t = raw[r];
    if (t->token == PG_QUERY__TOKEN__SQL_COMMENT || t->token == PG_QUERY__TOKEN__C_COMMENT)
      continue;
    // Already inside a token we re-delimited (U&'a' -- c<newline> 'b').
    if (!toks.empty() && begin + static_cast<std::size_t>(t->start) < toks.back().end) continue;
    auto rel_end = static_cast<std::size_t>(t->end);
    if (t->token == PG_QUERY__TOKEN__UIDENT || t->token == PG_QUERY__TOKEN__USCONST)
      rel_end = end_of_unicode_quoted(stmt, static_cast<std::size_t>(t->start));
    // PostgreSQL continues a quoted string across `--` comments on the way to
    // the next line ('a' -- c\n 'b' is 'ab'), but libpg_query's scanner emits
    // the comment as a token and ends the string: glue the pieces back.
    if ((t->token == PG_QUERY__TOKEN__SCONST || t->token == PG_QUERY__TOKEN__USCONST) &&
        stmt[static_cast<std::size_t>(t->start)] != '$') {
      while (true) {
        std::size_t k = r + 1;
        while (k < raw.size() && raw[k]->token == PG_QUERY__TOKEN__SQL_COMMENT) ++k;
        if (k == r + 1 || k >= raw.size() || raw[k]->token != PG_QUERY__TOKEN__SCONST) break;
        if (lexical::quote_continuation(stmt, rel_end) != static_cast<std::size_t>(raw[k]->start))
          break;
        r = k;
        rel_end = static_cast<std::size_t>(raw[r]->end);
      }
    }
    toks.push_back(Tok{static_cast<int>(t->token), static_cast<int>(t->keyword_kind),
                       begin + static_cast<std::size_t>(t->start), begin + rel_end});
  }
  return Parser(query, end, std::move(toks)).run();
}

std::string to_string(const ParseError& e) {
  std::string r = "ParseError{" + std::string(sqlstate(e.code)) + " \"" + e.message +
                  "\" position=" + std::to_string(e.position) +
                  " byte=" + std::to_string(e.byte_offset);
  if (!e.detail.empty()) r += " detail=\"" + e.detail + "\"";
  if (!e.hint.empty()) r += " hint=\"" + e.hint + "\"";
  return r + "}";
}

std::string to_string(const ParseResult& r) {
  if (std::holds_alternative<NotApiTokenStatement>(r)) return "NotApiTokenStatement";
  if (const auto* s = std::get_if<Statement>(&r)) return to_string(*s);
  return to_string(std::get<ParseError>(r));
}

}  // namespace tokengate::parser_ext
