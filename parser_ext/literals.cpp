// String-constant and identifier decoding following PostgreSQL's scan.l and parser.c.
#include "parser_ext/literals.hpp"

#include "parser_ext/lexical.hpp"

namespace tokengate::parser_ext {

namespace {

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool is_high_surrogate(char32_t c) noexcept { return c >= 0xD800 && c <= 0xDBFF; }
bool is_low_surrogate(char32_t c) noexcept { return c >= 0xDC00 && c <= 0xDFFF; }

// Reads `count` hex digits at s[i..]; -1 if any is missing.
long read_hex(std::string_view s, std::size_t i, int count) noexcept {
  long v = 0;
  for (int k = 0; k < count; ++k) {
    if (i + k >= s.size()) return -1;
    const int h = hex_value(s[i + k]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

// parser.c str_udeescape: resolves U& escapes in already-unquoted text.
// `base` is the offset of `in` inside the literal, for error positions.
bool unicode_unescape(std::string_view in, char esc, std::size_t base, DecodedLiteral& out) {
  std::string r;
  r.reserve(in.size());
  char32_t pending_high = 0;
  std::size_t pending_at = 0;
  for (std::size_t i = 0; i < in.size();) {
    if (in[i] != esc) {
      if (pending_high != 0) break;
      r += in[i++];
      continue;
    }
    long cp = -1;
    std::size_t len = 0;
    if (i + 1 < in.size() && in[i + 1] == esc) {
      if (pending_high != 0) break;
      r += esc;
      i += 2;
      continue;
    }
    if ((cp = read_hex(in, i + 1, 4)) >= 0) {
      len = 5;
    } else if (i + 1 < in.size() && in[i + 1] == '+' && (cp = read_hex(in, i + 2, 6)) >= 0) {
      len = 8;
    } else {
      out.error = "invalid Unicode escape";
      out.hint = "Unicode escapes must be \\XXXX or \\+XXXXXX.";
      out.error_offset = base + i;
      return false;
    }
    const auto c = static_cast<char32_t>(cp);
    if (c == 0 || c > 0x10FFFF) {
      out.error = "invalid Unicode escape value";
      out.error_offset = base + i;
      return false;
    }
    if (pending_high != 0) {
      if (!is_low_surrogate(c)) {
        out.error = "invalid Unicode surrogate pair";
        out.error_offset = base + i;
        return false;
      }
      append_utf8(r, 0x10000 + ((pending_high - 0xD800) << 10) + (c - 0xDC00));
      pending_high = 0;
    } else if (is_high_surrogate(c)) {
      pending_high = c;
      pending_at = i;
    } else if (is_low_surrogate(c)) {
      out.error = "invalid Unicode surrogate pair";
      out.error_offset = base + i;
      return false;
    } else {
      append_utf8(r, c);
    }
    i += len;
  }
  if (pending_high != 0) {
    out.error = "invalid Unicode surrogate pair";
    out.error_offset = base + pending_at;
    return false;
  }
  out.value = std::move(r);
  return true;
}

// One E'' escape at s[i] == '\\'; appends to out and returns the index after it.
std::size_t decode_backslash(std::string_view s, std::size_t i, std::string& out,
                             char32_t& pending_high) {
  ++i;  // the backslash
  if (i >= s.size()) return i;
  const char c = s[i];
  auto flush_high = [&] {
    if (pending_high != 0) {  // the scanner rejects this; keep something sane
      append_utf8(out, 0xFFFD);
      pending_high = 0;
    }
  };
  if (c == 'u' || c == 'U') {
    const int digits = c == 'u' ? 4 : 8;
    const long v = read_hex(s, i + 1, digits);
    if (v >= 0) {
      const auto cp = static_cast<char32_t>(v);
      if (pending_high != 0 && is_low_surrogate(cp)) {
        append_utf8(out, 0x10000 + ((pending_high - 0xD800) << 10) + (cp - 0xDC00));
        pending_high = 0;
      } else if (is_high_surrogate(cp)) {
        flush_high();
        pending_high = cp;
      } else {
        flush_high();
        append_utf8(out, cp);
      }
      return i + 1 + digits;
    }
  }
  flush_high();
  switch (c) {
    case 'b': out += '\b'; return i + 1;
    case 'f': out += '\f'; return i + 1;
    case 'n': out += '\n'; return i + 1;
    case 'r': out += '\r'; return i + 1;
    case 't': out += '\t'; return i + 1;
    default: break;
  }
  if (c >= '0' && c <= '7') {
    int v = 0;
    std::size_t k = i;
    while (k < s.size() && k < i + 3 && s[k] >= '0' && s[k] <= '7') v = v * 8 + (s[k++] - '0');
    out += static_cast<char>(v & 0xFF);
    return k;
  }
  if (c == 'x' && i + 1 < s.size() && hex_value(s[i + 1]) >= 0) {
    int v = hex_value(s[i + 1]);
    std::size_t k = i + 2;
    if (k < s.size() && hex_value(s[k]) >= 0) v = v * 16 + hex_value(s[k++]);
    out += static_cast<char>(v);
    return k;
  }
  out += c;  // \\ \' and any other character stand for themselves
  return i + 1;
}

// Decodes the quoted parts starting at the quote s[i], following continuations.
// `extended`: E'' backslash escapes. Returns false if unterminated.
bool decode_quoted_parts(std::string_view s, std::size_t i, bool extended, std::string& out) {
  char32_t pending_high = 0;
  while (true) {
    ++i;  // opening quote
    bool closed = false;
    while (i < s.size()) {
      const char c = s[i];
      if (c == '\'') {
        if (i + 1 < s.size() && s[i + 1] == '\'') {
          out += '\'';
          i += 2;
          continue;
        }
        ++i;
        closed = true;
        break;
      }
      if (extended && c == '\\') {
        i = decode_backslash(s, i, out, pending_high);
        continue;
      }
      out += c;
      ++i;
    }
    if (!closed) return false;
    const std::size_t next = lexical::quote_continuation(s, i);
    if (next == lexical::npos) break;
    i = next;
  }
  if (pending_high != 0) append_utf8(out, 0xFFFD);
  return true;
}

}  // namespace

DecodedLiteral decode_string_constant(std::string_view text, char uescape,
                                      bool standard_conforming_strings) {
  DecodedLiteral r;
  if (text.empty()) {
    r.error = "empty string constant";
    return r;
  }
  if (text[0] == '$') {  // $tag$body$tag$
    const std::size_t tag_end = text.find('$', 1);
    if (tag_end == std::string_view::npos || text.size() < 2 * (tag_end + 1)) {
      r.error = "unterminated dollar-quoted string";
      return r;
    }
    const std::size_t tag_len = tag_end + 1;
    r.value = std::string(text.substr(tag_len, text.size() - 2 * tag_len));
    return r;
  }
  const char c0 = text[0];
  if ((c0 == 'u' || c0 == 'U') && text.size() > 2 && text[1] == '&') {
    std::string raw;
    if (!decode_quoted_parts(text, 2, false, raw)) {
      r.error = "unterminated quoted string";
      return r;
    }
    unicode_unescape(raw, uescape, 3, r);
    return r;
  }
  std::size_t start = 0;
  bool extended = !standard_conforming_strings;
  if (c0 == 'e' || c0 == 'E') {
    extended = true;
    start = 1;
  } else if (c0 == 'n' || c0 == 'N') {
    start = 1;  // N'…': a national character constant is an ordinary string
  }
  if (start >= text.size() || text[start] != '\'' ||
      !decode_quoted_parts(text, start, extended, r.value)) {
    r.value.clear();
    r.error = "unterminated quoted string";
  }
  return r;
}

DecodedLiteral decode_identifier(std::string_view text, char uescape) {
  DecodedLiteral r;
  std::size_t q = std::string_view::npos;
  bool unicode = false;
  if (!text.empty() && text[0] == '"') {
    q = 0;
  } else if (text.size() > 2 && (text[0] == 'u' || text[0] == 'U') && text[1] == '&' &&
             text[2] == '"') {
    q = 2;
    unicode = true;
  }
  if (q == std::string_view::npos) {
    r.value.reserve(text.size());
    for (char c : text) r.value += (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c;
    return r;
  }
  std::string raw;
  std::size_t i = q + 1;
  bool closed = false;
  while (i < text.size()) {
    if (text[i] == '"') {
      if (i + 1 < text.size() && text[i + 1] == '"') {
        raw += '"';
        i += 2;
        continue;
      }
      closed = true;
      break;
    }
    raw += text[i++];
  }
  if (!closed) {
    r.error = "unterminated quoted identifier";
    return r;
  }
  if (raw.empty()) {
    r.error = "zero-length delimited identifier";
    return r;
  }
  if (!unicode) {
    r.value = std::move(raw);
    return r;
  }
  unicode_unescape(raw, uescape, q + 1, r);
  return r;
}

}  // namespace tokengate::parser_ext
