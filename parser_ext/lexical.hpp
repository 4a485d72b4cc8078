// PostgreSQL lexical helpers shared by the classifier and the parser (internal).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace tokengate::parser_ext::lexical {

inline constexpr std::size_t npos = std::string_view::npos;

// PostgreSQL's scan.l `space` (plus \v, which PostgreSQL 16 added; being
// generous only makes the classifier report more candidates).
[[nodiscard]] constexpr bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
// scan.l ident_start: [A-Za-z\200-\377_]
[[nodiscard]] constexpr bool is_ident_start(char c) noexcept {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || u == '_' || u >= 0x80;
}
// scan.l ident_cont: [A-Za-z\200-\377_0-9\$]
[[nodiscard]] constexpr bool is_ident_cont(char c) noexcept {
  return is_ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}

// Skips whitespace, `--` line comments and nested `/* */` comments from `i`.
// Returns the index of the next significant byte (s.size() at the end), or
// npos inside an unterminated block comment.
[[nodiscard]] constexpr std::size_t skip_space_and_comments(std::string_view s,
                                                            std::size_t i) noexcept {
  const std::size_t n = s.size();
  while (i < n) {
    const char c = s[i];
    if (is_space(c)) {
      ++i;
    } else if (c == '-' && i + 1 < n && s[i + 1] == '-') {
      i += 2;
      while (i < n && s[i] != '\n' && s[i] != '\r') ++i;
    } else if (c == '/' && i + 1 < n && s[i + 1] == '*') {
      int depth = 1;
      i += 2;
      while (depth > 0) {
        if (i + 1 >= n) return npos;
        if (s[i] == '/' && s[i + 1] == '*') {
          ++depth;
          i += 2;
        } else if (s[i] == '*' && s[i + 1] == '/') {
          --depth;
          i += 2;
        } else {
          ++i;
        }
      }
    } else {
      break;
    }
  }
  return i;
}

// The maximal identifier-like word starting at i (empty if s[i] cannot start one).
[[nodiscard]] constexpr std::string_view word_at(std::string_view s, std::size_t i) noexcept {
  if (i >= s.size() || !is_ident_start(s[i])) return {};
  std::size_t j = i + 1;
  while (j < s.size() && is_ident_cont(s[j])) ++j;
  return s.substr(i, j - i);
}

// ASCII case-insensitive equality against a lower-case literal keyword.
[[nodiscard]] constexpr bool equals_keyword(std::string_view word,
                                            std::string_view lower_keyword) noexcept {
  if (word.size() != lower_keyword.size()) return false;
  for (std::size_t k = 0; k < word.size(); ++k) {
    char c = word[k];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + ('a' - 'A'));
    if (c != lower_keyword[k]) return false;
  }
  return true;
}

// After a closing quote at i-1: if a PostgreSQL quote continuation follows
// (whitespace containing a newline, `--` comments allowed, then a quote),
// returns the index of the continuing quote, else npos (scan.l quotecontinue).
[[nodiscard]] constexpr std::size_t quote_continuation(std::string_view s,
                                                       std::size_t i) noexcept {
  bool seen_newline = false;
  const std::size_t n = s.size();
  while (i < n) {
    const char c = s[i];
    if (c == ' ' || c == '\t' || c == '\f') {
      ++i;
    } else if (c == '\n' || c == '\r') {
      seen_newline = true;
      ++i;
    } else if (c == '-' && i + 1 < n && s[i + 1] == '-') {
      while (i < n && s[i] != '\n' && s[i] != '\r') ++i;
      if (i == n) return npos;
    } else {
      break;
    }
  }
  return (seen_newline && i < n && s[i] == '\'') ? i : npos;
}

// 1-based character position of byte offset `byte` in `s`, counting UTF-8 code
// points as PostgreSQL does for the ErrorResponse position field.
[[nodiscard]] constexpr int char_position(std::string_view s, std::size_t byte) noexcept {
  if (byte > s.size()) byte = s.size();
  int chars = 0;
  for (std::size_t k = 0; k < byte; ++k)
    if ((static_cast<unsigned char>(s[k]) & 0xC0) != 0x80) ++chars;
  return chars + 1;
}

// Byte offset of the first byte sequence PostgreSQL's pg_utf8_islegal (or its
// NUL check) rejects, or npos if `s` is valid UTF-8 without NUL bytes.
[[nodiscard]] constexpr std::size_t invalid_utf8_at(std::string_view s) noexcept {
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const auto b = static_cast<unsigned char>(s[i]);
    if (b == 0) return i;
    if (b < 0x80) {
      ++i;
      continue;
    }
    std::size_t len = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the second byte
    if (b >= 0xC2 && b <= 0xDF) {
      len = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
      len = 3;
      if (b == 0xE0) lo = 0xA0;
      if (b == 0xED) hi = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
      len = 4;
      if (b == 0xF0) lo = 0x90;
      if (b == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    const auto b1 = static_cast<unsigned char>(s[i + 1]);
    if (b1 < lo || b1 > hi) return i;
    for (std::size_t k = 2; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return i;
    i += len;
  }
  return npos;
}

// PostgreSQL's text for an invalid sequence at s[i]: "0xc3 0x28" (as many bytes
// as the lead byte announces, within the string).
[[nodiscard]] inline std::string invalid_utf8_bytes(std::string_view s, std::size_t i) {
  const auto b = static_cast<unsigned char>(s[i]);
  std::size_t len = b < 0x80 ? 1 : (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3
                  : (b & 0xF8) == 0xF0 ? 4 : 1;
  if (i + len > s.size()) len = s.size() - i;
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t k = 0; k < len; ++k) {
    const auto c = static_cast<unsigned char>(s[i + k]);
    if (k > 0) out += ' ';
    out += "0x";
    out += hex[c >> 4];
    out += hex[c & 0xF];
  }
  return out;
}

}  // namespace tokengate::parser_ext::lexical
