// API TOKEN grammar: a recursive-descent parser over pg_query_scan tokens.
#include "parser_ext/parser.hpp"

#include <pg_query/pg_query.pb-c.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "parser_ext/classifier.hpp"
#include "parser_ext/encoding.hpp"
#include "parser_ext/lexer.hpp"
#include "parser_ext/lexical.hpp"
#include "parser_ext/literals.hpp"
#include "parser_ext/pg_query_handles.hpp"

namespace tokengate::parser_ext {

namespace {

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

// Where a candidate statement sits in the Query: maps offsets in its UTF-8
// text (what libpg_query scans) back to bytes and character positions of the
// Query as the client sent it, in its client encoding.
class Source {
 public:
  Source(std::string_view query, std::size_t begin, std::size_t end, std::string_view utf8,
         ClientEncoding encoding) noexcept
      : query_(query), begin_(begin), end_(end), utf8_(utf8),
        encoding_(encoding == ClientEncoding::sql_ascii ? ClientEncoding::utf8 : encoding) {}

  [[nodiscard]] std::string_view utf8() const noexcept { return utf8_; }

  // The Query byte at UTF-8 offset `off` of the statement.
  [[nodiscard]] std::size_t query_byte(std::size_t off) const noexcept {
    if (off >= utf8_.size()) return end_;
    return encoding::advance_chars(encoding_, query_, begin_, chars_before(off));
  }
  // PostgreSQL's 1-based character position of UTF-8 offset `off`.
  [[nodiscard]] int position(std::size_t off) const noexcept {
    return static_cast<int>(prefix_chars() + chars_before(off) + 1);
  }
  [[nodiscard]] ParseError error_at(ParseErrc code, std::string message, std::size_t off) const {
    ParseError e;
    e.code = code;
    e.message = std::move(message);
    e.byte_offset = query_byte(off);
    e.position = position(off);
    return e;
  }
  // A syntax error just past the statement's last token: PostgreSQL sees the
  // `;` that follows (in a multi-statement Query) or the end of the string.
  [[nodiscard]] ParseError error_after_end(const LexOptions& options) const {
    ParseError e;
    e.code = ParseErrc::syntax_error;
    Lexer lexer(query_, options, end_);
    Token t;
    while (lexer.next(t)) {
      if (t.kind == TokenKind::line_comment || t.kind == TokenKind::block_comment) continue;
      if (t.kind == TokenKind::punctuation && query_[t.begin] == ';') {
        e.message = "syntax error at or near \";\"";
        e.byte_offset = t.begin;
        e.position = static_cast<int>(encoding::char_count(encoding_, query_.substr(0, t.begin)) + 1);
        return e;
      }
      break;
    }
    e.message = "syntax error at end of input";
    e.byte_offset = query_.size();
    e.position = static_cast<int>(encoding::char_count(encoding_, query_) + 1);
    return e;
  }

 private:
  [[nodiscard]] std::size_t chars_before(std::size_t off) const noexcept {
    if (off > utf8_.size()) off = utf8_.size();
    return encoding::char_count(ClientEncoding::utf8, utf8_.substr(0, off));
  }
  [[nodiscard]] std::size_t prefix_chars() const noexcept {
    if (!prefix_chars_) prefix_chars_ = encoding::char_count(encoding_, query_.substr(0, begin_));
    return *prefix_chars_;
  }

  std::string_view query_;
  std::size_t begin_;
  std::size_t end_;
  std::string_view utf8_;
  ClientEncoding encoding_;
  mutable std::optional<std::size_t> prefix_chars_;  // computed on the first error
};

class Parser {
 public:
  Parser(const Source& src, const LexOptions& options, std::vector<Tok> toks,
         bool collect_deferred)
      : src_(src), q_(src.utf8()), options_(options), t_(std::move(toks)),
        collect_deferred_(collect_deferred) {}

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
    return src_.error_at(code, std::move(message), byte);
  }
  // Syntax error at the current token, PostgreSQL style.
  bool syntax_error() {
    if (i_ < t_.size()) {
      const Tok& t = t_[i_];
      err_ = make_error(ParseErrc::syntax_error,
                        "syntax error at or near \"" + std::string(text(t)) + "\"", t.begin);
      return false;
    }
    err_ = src_.error_after_end(options_);
    return false;
  }
  // Errors PostgreSQL raises after a successful raw parse: reported only if
  // the statement has no syntax error; the first one wins. Built only when
  // wanted: its position costs a pass over the Query before the statement.
  [[nodiscard]] bool want_deferred() const noexcept { return collect_deferred_ && !deferred_; }
  void conflicting_options(std::size_t clause_at) {
    if (want_deferred())
      deferred_ = make_error(ParseErrc::syntax_error, "conflicting or redundant options",
                             t_[clause_at].begin);
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
    // PostgreSQL's check_uescapechar (scanner_isspace has no \v in 15).
    const bool space = c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
    if (!ok || hex || c == '+' || c == '\'' || c == '"' || space) {
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
    if (want_deferred())
      deferred_ = make_error(ParseErrc::undefined_parameter,
                             "there is no parameter " + std::string(text(t)), t.begin);
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
    if (d.value.size() > max_name_bytes && want_deferred()) {
      ParseError e = make_error(
          ParseErrc::name_too_long,
          std::string(role ? "role" : "token") + " name \"" + d.value + "\" is too long",
          t.begin);
      e.detail = std::string(role ? "Role" : "Token") + " names are limited to " +
                 std::to_string(max_name_bytes) + " bytes.";
      deferred_ = std::move(e);
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
    DecodedLiteral d = decode_string_constant(text(t), esc, options_.standard_conforming_strings);
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

  // Trailing `;`s, then nothing. Deferred (post-parse) errors are left in
  // deferred(): the caller orders them after errors elsewhere in the Query.
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
      e.byte_offset = src_.query_byte(t_[i_].begin);
      e.position = 0;  // PostgreSQL gives no position for this one
      return e;
    }
    return std::move(*s);
  }

 public:
  [[nodiscard]] std::optional<ParseError>& deferred() noexcept { return deferred_; }

 private:

  const Source& src_;
  std::string_view q_;  // the statement's UTF-8 text; token offsets refer to it
  LexOptions options_;
  std::vector<Tok> t_;
  std::size_t i_ = 0;
  std::optional<ParseError> err_;
  std::optional<ParseError> deferred_;
  bool collect_deferred_;
};

// Byte offset of the 1-based character position `pos` within UTF-8 text s.
std::size_t byte_of_char_position(std::string_view s, int pos) {
  int chars = 1;
  for (std::size_t k = 0; k < s.size(); ++k) {
    if ((static_cast<unsigned char>(s[k]) & 0xC0) != 0x80) {
      if (chars == pos) return k;
      ++chars;
    }
  }
  return s.size();
}

// The SQLSTATE of a libpg_query scanner error, by its message.
ParseErrc scanner_errc(std::string_view message) {
  if (message.starts_with("invalid byte sequence")) return ParseErrc::character_not_in_repertoire;
  if (message.starts_with("unsafe use of string constant with Unicode escapes"))
    return ParseErrc::feature_not_supported;
  if (message.starts_with("unsafe use of \\'")) return ParseErrc::nonstandard_use_of_escape_character;
  if (message == "invalid Unicode escape") return ParseErrc::invalid_escape_sequence;
  return ParseErrc::syntax_error;
}

// Error texts quote the statement: in a session whose client encoding is not
// UTF-8 they must be in that encoding, as PostgreSQL's are.
void to_client_encoding(ParseError& e, ClientEncoding encoding) {
  for (std::string* text : {&e.message, &e.detail, &e.hint}) {
    std::string out;
    if (!text->empty() && encoding::from_utf8(encoding, *text, out)) *text = std::move(out);
  }
}

// Grammar of one statement of UTF-8 text, scanned by libpg_query.
detail::Parsed parse_utf8(const Source& src, const LexOptions& options, bool collect_deferred) {
  const std::string_view stmt = src.utf8();
  const std::string copy(stmt);  // pg_query_scan wants a NUL-terminated string
  const ScannerSettings settings(options.standard_conforming_strings);
  const ScanResult scan = ScanResult::scan(copy.c_str());
  if (const PgQueryError* e = scan.error()) {
    const std::string message = e->message != nullptr ? e->message : "scanner error";
    const ParseErrc code = scanner_errc(message);
    const std::size_t off = byte_of_char_position(stmt, e->cursorpos > 0 ? e->cursorpos : 1);
    ParseError err = src.error_at(code, message, off);
    if (e->cursorpos <= 0) err.position = 0;  // E'\xff' and the like: none
    return {std::move(err), std::nullopt};
  }
  const auto raw = scan.tokens();
  std::vector<Tok> toks;
  toks.reserve(raw.size());
  for (std::size_t r = 0; r < raw.size(); ++r) {
    const PgQuery__ScanToken* t = raw[r];
    if (t->token == PG_QUERY__TOKEN__SQL_COMMENT || t->token == PG_QUERY__TOKEN__C_COMMENT)
      continue;
    // Already inside a token we re-delimited (U&'a' -- c<newline> 'b').
    if (!toks.empty() && static_cast<std::size_t>(t->start) < toks.back().end) continue;
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
                       static_cast<std::size_t>(t->start), rel_end});
  }
  Parser parser(src, options, std::move(toks), collect_deferred);
  ParseResult result = parser.run();
  return {std::move(result), std::move(parser.deferred())};
}

ParseError limit_error(std::size_t at) {
  ParseError e;
  e.code = ParseErrc::program_limit_exceeded;
  e.message = "API TOKEN statement is too long";
  e.detail = "An API TOKEN statement may be at most " +
             std::to_string(max_api_token_statement_bytes) + " bytes long.";
  e.byte_offset = at;
  e.position = 0;
  return e;
}

}  // namespace

detail::Parsed detail::parse_one(std::string_view query, std::size_t begin, std::size_t end,
                                 const LexOptions& options, bool collect_deferred) {
  if (end > query.size()) end = query.size();
  if (begin > end) begin = end;
  // Only this much of a Query is ever copied or handed to libpg_query, which
  // needs several times the text's size while it scans.
  if (end - begin > max_api_token_statement_bytes) return {limit_error(begin), std::nullopt};
  const std::string_view stmt = query.substr(begin, end - begin);
  std::string utf8;
  if (auto err = encoding::to_utf8(options.encoding, stmt, utf8)) {
    err->byte_offset += begin;
    return {std::move(*err), std::nullopt};
  }
  const Source src(query, begin, end, utf8, options.encoding);
  Parsed p = parse_utf8(src, options, collect_deferred);
  if (utf8 != stmt) {  // converted: quote the client's own encoding in errors
    if (auto* e = std::get_if<ParseError>(&p.result)) to_client_encoding(*e, options.encoding);
    if (p.deferred) to_client_encoding(*p.deferred, options.encoding);
  }
  return p;
}

ParseResult detail::lexical_error(std::string_view query, const StatementSplitter& splitter,
                                  const LexOptions& options) {
  const LexError& le = *splitter.error();
  const ParseError lexical = to_parse_error(query, le, options);
  if (lexical.code == ParseErrc::character_not_in_repertoire ||
      lexical.code == ParseErrc::untranslatable_character || lexical.position == 0)
    return lexical;
  // PostgreSQL's grammar asks for tokens one at a time: a syntax error before
  // the token that fails to lex is reported instead.
  const std::size_t first = splitter.statement_first_token();
  if (first < le.token_begin) {
    Parsed p = parse_one(query, first, le.token_begin, options);
    if (const auto* e = std::get_if<ParseError>(&p.result))
      if (e->byte_offset < le.token_begin && e->code != ParseErrc::program_limit_exceeded) return *e;
  }
  return lexical;
}

ParseResult parse_statement(std::string_view query, std::size_t begin, std::size_t end,
                            const LexOptions& options) {
  if (end > query.size()) end = query.size();
  if (begin > end) begin = end;
  const std::string_view span = query.substr(begin, end - begin);
  if (could_be_api_token_statement(span))
    return detail::parse_statement_unfiltered(query, begin, end, options);
  // An API TOKEN statement after an ordinary one in the same text (a Parse of
  // "SELECT 1; DROP API TOKEN x"): PostgreSQL refuses several commands in a
  // prepared statement, and so do we, so that the API TOKEN statement never
  // travels upstream.
  if (!query_may_contain_api_token_statement(span)) return NotApiTokenStatement{};
  StatementSplitter splitter(query.substr(0, end), options, begin);
  std::size_t b = 0, e = 0;
  bool first = true;
  while (splitter.next(b, e)) {
    const std::size_t t = splitter.first_token();
    if (std::exchange(first, false) ||
        !could_be_api_token_statement(query.substr(t, splitter.last_token_end() - t)))
      continue;
    while (splitter.next(b, e)) {
    }
    if (splitter.error() != nullptr) return to_parse_error(query, *splitter.error(), options);
    ParseError m;
    m.code = ParseErrc::syntax_error;
    m.message = "cannot insert multiple commands into a prepared statement";
    m.byte_offset = t;
    m.position = 0;
    return m;
  }
  return NotApiTokenStatement{};  // a lexical error is PostgreSQL's to report
}

ParseResult detail::parse_statement_unfiltered(std::string_view query, std::size_t begin,
                                               std::size_t end, const LexOptions& options) {
  if (end > query.size()) end = query.size();
  if (begin > end) begin = end;
  // Lex only [begin, end); positions still count from the Query's start.
  StatementSplitter splitter(query.substr(0, end), options, begin);
  std::size_t b = 0, e = 0;
  if (!splitter.next(b, e)) {
    if (splitter.error() != nullptr) return lexical_error(query, splitter, options);
    return NotApiTokenStatement{};  // only comments and `;`
  }
  Parsed p = parse_one(query, splitter.first_token(), splitter.last_token_end(), options);
  if (std::holds_alternative<NotApiTokenStatement>(p.result)) return p.result;
  if (std::holds_alternative<ParseError>(p.result)) {
    // PostgreSQL checks the encoding of the whole string before parsing.
    if (auto bad = verify_encoding(query.substr(0, end), options, splitter.position()))
      return to_parse_error(query, *bad, options);
    return p.result;
  }
  // PostgreSQL lexes and parses the whole string before it counts statements,
  // and counts them before it analyses any.
  if (splitter.next(b, e)) {
    const std::size_t second = splitter.first_token();
    std::size_t more_b = 0, more_e = 0;
    while (splitter.next(more_b, more_e)) {
    }
    if (splitter.error() != nullptr) return to_parse_error(query, *splitter.error(), options);
    ParseError m;
    m.code = ParseErrc::syntax_error;
    m.message = "cannot insert multiple commands into a prepared statement";
    m.byte_offset = second;
    m.position = 0;  // PostgreSQL gives no position for this one
    return m;
  }
  if (splitter.error() != nullptr) return to_parse_error(query, *splitter.error(), options);
  if (p.deferred) return std::move(*p.deferred);
  return p.result;
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
