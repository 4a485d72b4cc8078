// PostgreSQL 15's scan.l rules for every token that can hide a `;`, as an O(1)-memory lexer.
#include "parser_ext/lexer.hpp"

#include <algorithm>

namespace tokengate::parser_ext {

namespace {

constexpr std::size_t npos = std::string_view::npos;

// PostgreSQL's NAMEDATALEN: operators of 64 bytes or more are an error.
constexpr std::size_t namedatalen = 64;

// scan.l `space` (PostgreSQL 15: no \v).
constexpr bool is_space(unsigned char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}
constexpr bool is_newline(unsigned char c) noexcept { return c == '\n' || c == '\r'; }
constexpr bool is_digit(unsigned char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_hex(unsigned char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
// scan.l ident_start: [A-Za-z\200-\377_]
constexpr bool is_ident_start(unsigned char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}
// scan.l ident_cont: [A-Za-z\200-\377_0-9\$]
constexpr bool is_ident_cont(unsigned char c) noexcept {
  return is_ident_start(c) || is_digit(c) || c == '$';
}
// scan.l dolq_cont: [A-Za-z\200-\377_0-9]
constexpr bool is_dolq_cont(unsigned char c) noexcept { return is_ident_start(c) || is_digit(c); }
// scan.l op_chars
constexpr bool is_op_char(unsigned char c) noexcept {
  switch (c) {
    case '~': case '!': case '@': case '#': case '^': case '&': case '|': case '`': case '?':
    case '+': case '-': case '*': case '/': case '%': case '<': case '>': case '=':
      return true;
    default:
      return false;
  }
}
constexpr bool is_high_surrogate(char32_t c) noexcept { return c >= 0xD800 && c <= 0xDBFF; }
constexpr bool is_low_surrogate(char32_t c) noexcept { return c >= 0xDC00 && c <= 0xDFFF; }

// Bytes a hot loop may pass over without a second look: ASCII other than
// NUL and the characters that end or escape what is being scanned.
struct ByteSet {
  bool stop[256] = {};
};
constexpr ByteSet stops(std::string_view chars) {
  ByteSet s;
  s.stop[0] = true;
  for (int c = 0x80; c < 256; ++c) s.stop[c] = true;
  for (const char c : chars) s.stop[static_cast<unsigned char>(c)] = true;
  return s;
}
constexpr ByteSet line_comment_stops = stops("\n\r");
constexpr ByteSet block_comment_stops = stops("*/");
constexpr ByteSet quote_stops = stops("'");
constexpr ByteSet escape_stops = stops("'\\");
constexpr ByteSet identifier_stops = stops("\"");
constexpr ByteSet dollar_stops = stops("$");

inline std::size_t skip_plain(std::string_view s, std::size_t i, const ByteSet& set) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  while (i < n && !set.stop[p[i]]) ++i;
  return i;
}

bool is_encoding_error(LexErrc c) noexcept {
  return c == LexErrc::invalid_character || c == LexErrc::no_equivalent ||
         c == LexErrc::unsupported_encoding;
}

LexErrc encoding_errc(int code) noexcept {
  if (code == encoding::no_equivalent) return LexErrc::no_equivalent;
  if (code == encoding::unsupported) return LexErrc::unsupported_encoding;
  return LexErrc::invalid_character;
}

}  // namespace

std::size_t Lexer::char_at(std::size_t i) noexcept {
  const auto c = static_cast<unsigned char>(s_[i]);
  if (c != 0 && c < 0x80) return 1;
  const int l = encoding::verify_char(o_.encoding,
                                      reinterpret_cast<const unsigned char*>(s_.data()) + i,
                                      s_.size() - i);
  if (l > 0) return static_cast<std::size_t>(l);
  fail(encoding_errc(l), i, i + 1, i);
  return 0;
}

bool Lexer::fail(LexErrc code, std::size_t at, std::size_t near_end,
                 std::size_t token_begin) noexcept {
  failed_ = true;
  err_ = LexError{code, at, near_end, token_begin};
  i_ = s_.size();
  if (is_encoding_error(code)) return false;
  // PostgreSQL checks the whole string's encoding before it lexes anything:
  // an invalid byte sequence anywhere is the error, not what we found first.
  // Everything before token_begin has been checked already.
  if (auto e = verify_encoding(s_, o_, token_begin)) err_ = *e;
  return false;
}

bool Lexer::next(Token& out) noexcept {
  if (failed_) return false;
  const std::size_t n = s_.size();
  const auto at = [this, n](std::size_t k) noexcept -> unsigned char {
    return k < n ? static_cast<unsigned char>(s_[k]) : 0;
  };
  while (i_ < n && is_space(at(i_))) ++i_;
  if (i_ >= n) return false;
  const std::size_t b = i_;
  const unsigned char c = at(b);

  if (c == '-' && at(b + 1) == '-') {
    std::size_t k = b + 2;
    while ((k = skip_plain(s_, k, line_comment_stops)) < n && !is_newline(at(k))) {
      const std::size_t l = char_at(k);
      if (l == 0) return false;
      k += l;
    }
    out = {TokenKind::line_comment, b, k};
    i_ = k;
    return true;
  }
  if (c == '/' && at(b + 1) == '*') return block_comment(out, b);

  // Letters that start a quoted token when a quote follows at once.
  switch (c) {
    case 'b': case 'B':
      if (at(b + 1) == '\'') return quoted(out, b, b + 1, TokenKind::bit_string);
      break;
    case 'x': case 'X':
      if (at(b + 1) == '\'') return quoted(out, b, b + 1, TokenKind::hex_string);
      break;
    case 'e': case 'E':
      if (at(b + 1) == '\'') return quoted(out, b, b + 1, TokenKind::extended_string);
      break;
    case 'n': case 'N':
      // N'…' is the keyword NCHAR followed by an ordinary string.
      if (at(b + 1) == '\'') {
        out = {TokenKind::word, b, b + 1};
        i_ = b + 1;
        return true;
      }
      break;
    case 'u': case 'U':
      if (at(b + 1) == '&') {
        if (at(b + 2) == '\'') {
          if (!o_.standard_conforming_strings)
            return fail(LexErrc::unicode_string_without_scs, b, b + 3, b);
          return quoted(out, b, b + 2, TokenKind::unicode_string);
        }
        if (at(b + 2) == '"') return quoted_identifier(out, b, b + 2, TokenKind::unicode_identifier);
        // scan.l xufailed: the U alone is an identifier, & an operator.
        out = {TokenKind::word, b, b + 1};
        i_ = b + 1;
        return true;
      }
      break;
    default:
      break;
  }
  if (c == '\'') return quoted(out, b, b, TokenKind::string);
  if (c == '"') return quoted_identifier(out, b, b, TokenKind::quoted_identifier);
  if (c == '$') {
    if (is_digit(at(b + 1))) {
      std::size_t k = b + 1;
      while (is_digit(at(k))) ++k;
      if (k < n && is_ident_start(at(k))) {
        const std::size_t junk_end = identifier_end(k);
        if (junk_end == npos) return false;
        return fail(LexErrc::trailing_junk_parameter, b, junk_end, b);
      }
      out = {TokenKind::parameter, b, k};
      i_ = k;
      return true;
    }
    if (at(b + 1) == '$' || is_ident_start(at(b + 1))) {
      std::size_t k = b + 1;
      while (k < n && is_dolq_cont(at(k))) {
        const std::size_t l = char_at(k);
        if (l == 0) return false;
        k += l;
      }
      if (at(k) == '$') return dollar_quoted(out, b, k + 1);
      // scan.l dolqfailed: the $ alone; the tag lexes again as a word.
    }
    out = {TokenKind::punctuation, b, b + 1};
    i_ = b + 1;
    return true;
  }
  if (is_ident_start(c)) {
    const std::size_t k = identifier_end(b);
    if (k == npos) return false;
    out = {TokenKind::word, b, k};
    i_ = k;
    return true;
  }
  if (is_digit(c) || (c == '.' && is_digit(at(b + 1)))) return number(out, b);
  if (c == '.' || c == ':') {
    // .. and :: and := are tokens of their own.
    const bool pair = (c == '.' && at(b + 1) == '.') ||
                      (c == ':' && (at(b + 1) == ':' || at(b + 1) == '='));
    out = {pair ? TokenKind::operator_ : TokenKind::punctuation, b, b + (pair ? 2 : 1)};
    i_ = out.end;
    return true;
  }
  if (is_op_char(c)) return operator_run(out, b);
  if (c == 0) return fail(LexErrc::invalid_character, b, b + 1, b);
  out = {TokenKind::punctuation, b, b + 1};
  i_ = b + 1;
  return true;
}

std::size_t Lexer::identifier_end(std::size_t k) noexcept {
  const std::size_t n = s_.size();
  while (k < n) {
    const auto d = static_cast<unsigned char>(s_[k]);
    if (d < 0x80) {
      if (!is_ident_cont(d)) break;
      ++k;
      continue;
    }
    const std::size_t l = char_at(k);
    if (l == 0) return npos;
    k += l;
  }
  return k;
}

bool Lexer::block_comment(Token& out, std::size_t begin) noexcept {
  const std::size_t n = s_.size();
  std::size_t depth = 0;
  std::size_t i = begin + 2;
  while (true) {
    i = skip_plain(s_, i, block_comment_stops);
    if (i >= n) return fail(LexErrc::unterminated_comment, begin, n, begin);
    const char c = s_[i];
    if (c == '/' && i + 1 < n && s_[i + 1] == '*') {
      ++depth;
      i += 2;
    } else if (c == '*' && i + 1 < n && s_[i + 1] == '/') {
      i += 2;
      if (depth == 0) break;
      --depth;
    } else {
      const std::size_t l = char_at(i);
      if (l == 0) return false;
      i += l;
    }
  }
  out = {TokenKind::block_comment, begin, i};
  i_ = i;
  return true;
}

std::size_t Lexer::continuation(std::size_t i) const noexcept {
  // scan.l quotecontinue: {whitespace_with_newline}{quote}, where comments
  // may come before the newline and, each ended by a newline, after it.
  const std::size_t n = s_.size();
  const auto* p = reinterpret_cast<const unsigned char*>(s_.data());
  bool seen_newline = false;
  while (i < n) {
    const unsigned char c = p[i];
    if (c == ' ' || c == '\t' || c == '\f') {
      ++i;
    } else if (is_newline(c)) {
      seen_newline = true;
      ++i;
    } else if (c == '-' && i + 1 < n && p[i + 1] == '-') {
      i += 2;
      while (i < n && !is_newline(p[i])) {
        // An invalid byte ends the attempt; the lexer reports it on its way.
        const int l = p[i] < 0x80 && p[i] != 0 ? 1 : encoding::verify_char(o_.encoding, p + i, n - i);
        if (l <= 0) return npos;
        i += static_cast<std::size_t>(l);
      }
      if (i == n) return npos;
    } else {
      break;
    }
  }
  return (seen_newline && i < n && p[i] == '\'') ? i : npos;
}

bool Lexer::quoted(Token& out, std::size_t begin, std::size_t quote, TokenKind kind) noexcept {
  const std::size_t n = s_.size();
  const bool backslashes = kind == TokenKind::extended_string ||
                           (kind == TokenKind::string && !o_.standard_conforming_strings);
  const bool doubling = kind != TokenKind::bit_string && kind != TokenKind::hex_string;
  char32_t high_surrogate = 0;  // scan.l state xeu: waiting for the second half
  const ByteSet& plain = backslashes ? escape_stops : quote_stops;
  std::size_t i = quote + 1;
  while (true) {
    if (high_surrogate == 0) i = skip_plain(s_, i, plain);
    if (i >= n) {
      if (high_surrogate != 0) return fail(LexErrc::invalid_surrogate_pair, n, n, begin);
      const LexErrc e = kind == TokenKind::bit_string   ? LexErrc::unterminated_bit_string
                        : kind == TokenKind::hex_string ? LexErrc::unterminated_hex_string
                                                        : LexErrc::unterminated_string;
      return fail(e, begin, n, begin);
    }
    const char c = s_[i];
    if (high_surrogate != 0 && c != '\\') {
      const std::size_t l = char_at(i);
      if (l == 0) return false;
      return fail(LexErrc::invalid_surrogate_pair, i, i + l, begin);
    }
    if (c == '\'') {
      if (doubling && i + 1 < n && s_[i + 1] == '\'') {
        i += 2;
        continue;
      }
      const std::size_t next = continuation(i + 1);
      if (next != npos) {
        i = next + 1;
        continue;
      }
      out = {kind, begin, i + 1};
      i_ = i + 1;
      return true;
    }
    if (c == '\\' && backslashes) {
      if (!backslash_escape(i, begin, high_surrogate)) return false;
      continue;
    }
    const std::size_t l = char_at(i);
    if (l == 0) return false;
    i += l;
  }
}

bool Lexer::backslash_escape(std::size_t& i, std::size_t token_begin,
                             char32_t& high_surrogate) noexcept {
  const std::size_t n = s_.size();
  if (i + 1 >= n) {  // a backslash just before the end
    if (high_surrogate != 0) return fail(LexErrc::invalid_surrogate_pair, i, i + 1, token_begin);
    ++i;
    return true;
  }
  const char e = s_[i + 1];
  if (e == 'u' || e == 'U') {
    const std::size_t want = e == 'u' ? 4 : 8;
    std::size_t digits = 0;
    char32_t v = 0;
    while (digits < want && i + 2 + digits < n &&
           is_hex(static_cast<unsigned char>(s_[i + 2 + digits]))) {
      const char h = s_[i + 2 + digits];
      v = v * 16 + static_cast<char32_t>(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
      ++digits;
    }
    const std::size_t end = i + 2 + digits;
    if (digits < want) return fail(LexErrc::invalid_unicode_escape, i, end, token_begin);
    if (high_surrogate != 0) {
      if (!is_low_surrogate(v)) return fail(LexErrc::invalid_surrogate_pair, i, end, token_begin);
      high_surrogate = 0;
    } else if (is_high_surrogate(v)) {
      high_surrogate = v;
    } else if (is_low_surrogate(v)) {
      return fail(LexErrc::invalid_surrogate_pair, i, end, token_begin);
    } else if (v == 0 || v > 0x10FFFF) {
      return fail(LexErrc::invalid_unicode_escape_value, i, end, token_begin);
    }
    i = end;
    return true;
  }
  if (high_surrogate != 0) return fail(LexErrc::invalid_surrogate_pair, i, i + 1, token_begin);
  // backslash_quote = safe_encoding (the default): \' is refused where a
  // character's second byte could be a backslash. PostgreSQL points at the
  // string's start.
  if (e == '\'' && is_client_only(o_.encoding))
    return fail(LexErrc::unsafe_backslash_quote, token_begin, token_begin + 1, token_begin);
  // Any other escape takes the next character as it is; octal and hex
  // digits after it are ordinary string content as far as lexing goes.
  const std::size_t l = char_at(i + 1);
  if (l == 0) return false;
  i += 1 + l;
  return true;
}

bool Lexer::quoted_identifier(Token& out, std::size_t begin, std::size_t quote,
                              TokenKind kind) noexcept {
  const std::size_t n = s_.size();
  bool empty = true;
  std::size_t i = quote + 1;
  while (true) {
    const std::size_t plain_end = skip_plain(s_, i, identifier_stops);
    if (plain_end > i) empty = false;
    i = plain_end;
    if (i >= n) return fail(LexErrc::unterminated_identifier, begin, n, begin);
    if (s_[i] == '"') {
      if (i + 1 < n && s_[i + 1] == '"') {
        i += 2;
        empty = false;
        continue;
      }
      if (empty) return fail(LexErrc::zero_length_identifier, begin, i + 1, begin);
      out = {kind, begin, i + 1};
      i_ = i + 1;
      return true;
    }
    const std::size_t l = char_at(i);
    if (l == 0) return false;
    i += l;
    empty = false;
  }
}

bool Lexer::dollar_quoted(Token& out, std::size_t begin, std::size_t tag_end) noexcept {
  // The body ends at the first `$tag$` equal to the opening one. Tags cannot
  // contain `$`, so a byte match at a `$` is exactly scan.l's xdolq match.
  const std::string_view delimiter = s_.substr(begin, tag_end - begin);
  const std::size_t n = s_.size();
  std::size_t i = tag_end;
  while (true) {
    i = skip_plain(s_, i, dollar_stops);
    if (i >= n) return fail(LexErrc::unterminated_dollar_string, begin, n, begin);
    if (s_[i] == '$') {
      if (s_.compare(i, delimiter.size(), delimiter) == 0) {
        out = {TokenKind::dollar_string, begin, i + delimiter.size()};
        i_ = out.end;
        return true;
      }
      ++i;
      continue;
    }
    const std::size_t l = char_at(i);
    if (l == 0) return false;
    i += l;
  }
}

bool Lexer::number(Token& out, std::size_t begin) noexcept {
  // scan.l integer, decimal, decimalfail, real, realfail and (PostgreSQL 15)
  // integer_junk, decimal_junk, real_junk: a number directly followed by an
  // identifier is an error. flex takes the longest match, the earlier rule
  // on a tie, so "1e3" is a real but "1e3$" and "1ea" are junk.
  const std::size_t n = s_.size();
  const auto at = [this, n](std::size_t k) noexcept -> unsigned char {
    return k < n ? static_cast<unsigned char>(s_[k]) : 0;
  };
  enum { ok, junk } which = ok;
  std::size_t best = begin;
  const auto take = [&](std::size_t end, decltype(which) w) noexcept {
    if (end > best) {
      best = end;
      which = w;
    }
  };
  std::size_t digits_end = begin;
  while (is_digit(at(digits_end))) ++digits_end;
  take(digits_end, ok);
  std::size_t mantissa_end = digits_end;
  bool decimal = false;
  if (at(digits_end) == '.') {
    if (digits_end > begin && at(digits_end + 1) == '.') {  // 1..2 is 1, .., 2
      out = {TokenKind::number, begin, digits_end};
      i_ = digits_end;
      return true;
    }
    decimal = true;
    mantissa_end = digits_end + 1;
    while (is_digit(at(mantissa_end))) ++mantissa_end;
    take(mantissa_end, ok);
  }
  if (at(mantissa_end) == 'e' || at(mantissa_end) == 'E') {
    std::size_t q = mantissa_end + 1;
    const bool sign = at(q) == '+' || at(q) == '-';
    if (sign) ++q;
    if (is_digit(at(q))) {
      std::size_t r = q;
      while (is_digit(at(r))) ++r;
      take(r, ok);
      if (is_ident_start(at(r))) {
        const std::size_t e = identifier_end(r);
        if (e == npos) return false;
        take(e, junk);
      }
    } else if (sign) {
      take(q, junk);  // realfail: 1e+
    }
  }
  if (digits_end > begin && is_ident_start(at(digits_end))) {
    const std::size_t e = identifier_end(digits_end);
    if (e == npos) return false;
    take(e, junk);
  }
  if (decimal && is_ident_start(at(mantissa_end))) {
    const std::size_t e = identifier_end(mantissa_end);
    if (e == npos) return false;
    take(e, junk);
  }
  if (which == junk) return fail(LexErrc::trailing_junk_number, begin, best, begin);
  out = {TokenKind::number, begin, best};
  i_ = best;
  return true;
}

bool Lexer::operator_run(Token& out, std::size_t begin) noexcept {
  const std::size_t n = s_.size();
  std::size_t end = begin;
  while (end < n && is_op_char(static_cast<unsigned char>(s_[end]))) ++end;
  // A comment start inside the run ends the operator there.
  std::size_t len = end - begin;
  for (std::size_t j = begin + 1; j + 1 < end; ++j) {
    if ((s_[j] == '/' && s_[j + 1] == '*') || (s_[j] == '-' && s_[j + 1] == '-')) {
      len = j - begin;
      break;
    }
  }
  // '+' and '-' end a multi-character operator only if it also holds a
  // character that SQL's own operators do not use (so =- is = and -).
  if (len > 1 && (s_[begin + len - 1] == '+' || s_[begin + len - 1] == '-')) {
    bool qualifying = false;
    for (std::size_t j = begin; j + 1 < begin + len; ++j) {
      switch (s_[j]) {
        case '~': case '!': case '@': case '#': case '^': case '&': case '|': case '`':
        case '?': case '%':
          qualifying = true;
          break;
        default:
          break;
      }
    }
    if (!qualifying) {
      do --len;
      while (len > 1 && (s_[begin + len - 1] == '+' || s_[begin + len - 1] == '-'));
    }
  }
  if (len >= namedatalen) return fail(LexErrc::operator_too_long, begin, begin + len, begin);
  out = {TokenKind::operator_, begin, begin + len};
  i_ = out.end;
  return true;
}

std::optional<LexError> verify_encoding(std::string_view text, const LexOptions& options,
                                        std::size_t from) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  for (std::size_t i = from; i < n;) {
    if (p[i] != 0 && p[i] < 0x80) {
      ++i;
      continue;
    }
    const int l = encoding::verify_char(options.encoding, p + i, n - i);
    if (l <= 0) return LexError{encoding_errc(l), i, i + 1, i};
    i += static_cast<std::size_t>(l);
  }
  return std::nullopt;
}

ParseError to_parse_error(std::string_view text, const LexError& e, const LexOptions& options) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t at = std::min(e.at, text.size());
  if (is_encoding_error(e.code)) {
    const int code = e.code == LexErrc::no_equivalent  ? encoding::no_equivalent
                     : e.code == LexErrc::unsupported_encoding ? encoding::unsupported
                                                               : encoding::invalid;
    ParseError err = encoding::character_error(options.encoding, code, p + at, text.size() - at);
    err.byte_offset = at;
    return err;
  }
  ParseError err;
  err.byte_offset = at;
  err.position = static_cast<int>(encoding::char_count(options.encoding, text.substr(0, at)) + 1);
  const auto scanner_error = [&](const char* what) {
    err.code = ParseErrc::syntax_error;
    if (at >= text.size()) {
      err.message = std::string(what) + " at end of input";
      return;
    }
    // PostgreSQL quotes from the token to the end of what it matched; cut
    // long excerpts at a character boundary.
    std::size_t end = std::min(std::max(e.near_end, at + 1), text.size());
    if (end - at > max_error_excerpt_bytes) {
      std::size_t k = at;
      while (k < end) {
        const std::size_t l =
            encoding::char_length(options.encoding, p + k, text.size() - k);
        if (k + l - at > max_error_excerpt_bytes) break;
        k += l;
      }
      end = k;
    }
    err.message = std::string(what) + " at or near \"" + std::string(text.substr(at, end - at)) + "\"";
  };
  switch (e.code) {
    case LexErrc::unterminated_comment: scanner_error("unterminated /* comment"); break;
    case LexErrc::unterminated_bit_string: scanner_error("unterminated bit string literal"); break;
    case LexErrc::unterminated_hex_string:
      scanner_error("unterminated hexadecimal string literal");
      break;
    case LexErrc::unterminated_string: scanner_error("unterminated quoted string"); break;
    case LexErrc::unterminated_dollar_string:
      scanner_error("unterminated dollar-quoted string");
      break;
    case LexErrc::unterminated_identifier: scanner_error("unterminated quoted identifier"); break;
    case LexErrc::zero_length_identifier: scanner_error("zero-length delimited identifier"); break;
    case LexErrc::invalid_surrogate_pair: scanner_error("invalid Unicode surrogate pair"); break;
    case LexErrc::invalid_unicode_escape_value: scanner_error("invalid Unicode escape value"); break;
    case LexErrc::trailing_junk_number: scanner_error("trailing junk after numeric literal"); break;
    case LexErrc::trailing_junk_parameter: scanner_error("trailing junk after parameter"); break;
    case LexErrc::operator_too_long: scanner_error("operator too long"); break;
    case LexErrc::unicode_string_without_scs:
      err.code = ParseErrc::feature_not_supported;
      err.message = "unsafe use of string constant with Unicode escapes";
      err.detail =
          "String constants with Unicode escapes cannot be used when "
          "standard_conforming_strings is off.";
      break;
    case LexErrc::unsafe_backslash_quote:
      err.code = ParseErrc::nonstandard_use_of_escape_character;
      err.message = "unsafe use of \\' in a string literal";
      err.hint = "Use '' to write quotes in strings. \\' is insecure in client-only encodings.";
      break;
    case LexErrc::invalid_unicode_escape:
      err.code = ParseErrc::invalid_escape_sequence;
      err.message = "invalid Unicode escape";
      err.hint = "Unicode escapes must be \\uXXXX or \\UXXXXXXXX.";
      break;
    default:
      break;
  }
  return err;
}

bool StatementSplitter::next(std::size_t& begin, std::size_t& end) noexcept {
  Token t;
  std::size_t depth = 0;
  has_token_ = false;
  while (lexer_.next(t)) {
    if (t.kind == TokenKind::line_comment || t.kind == TokenKind::block_comment) continue;
    if (t.kind == TokenKind::punctuation) {
      const char c = s_[t.begin];
      if (c == ';' && depth == 0) {
        if (has_token_) {
          begin = begin_;
          end = t.begin;
          begin_ = t.end;
          return true;
        }
        begin_ = t.end;
        continue;
      }
      if (c == '(') ++depth;
      if (c == ')' && depth > 0) --depth;
    }
    if (!has_token_) first_ = t.begin;
    has_token_ = true;
    last_end_ = t.end;
  }
  if (lexer_.error() != nullptr) return false;
  if (!has_token_) return false;
  begin = begin_;
  end = s_.size();
  begin_ = end;
  has_token_ = false;
  return true;
}

std::size_t StatementSplitter::statement_first_token() const noexcept {
  if (has_token_) return first_;
  const LexError* e = lexer_.error();
  return e != nullptr ? e->token_begin : begin_;
}

}  // namespace tokengate::parser_ext
