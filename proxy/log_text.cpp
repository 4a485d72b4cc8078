// Escaping of peer-supplied text for the server log (see log_text.hpp).
#include "proxy/log_text.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace tokengate {

namespace {

constexpr std::size_t kTokenRun = 20;  // "eyJ" + 17: shorter than any header of a real token

bool token_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
         c == '.';
}

// The length of a valid UTF-8 sequence at s[i] and its code point; 0 if invalid.
std::size_t utf8_sequence(std::string_view s, std::size_t i, std::uint32_t& cp) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  std::size_t len = 0;
  if (b0 < 0x80) {
    cp = b0;
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    cp = b0 & 0x0F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (i + len > s.size()) return 0;
  for (std::size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
      (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

void hex_byte(std::string& out, unsigned char b) {
  char buf[5];
  std::snprintf(buf, sizeof buf, "\\x%02x", b);
  out += buf;
}

}  // namespace

bool has_token_run(std::string_view text) {
  for (auto at = text.find("eyJ"); at != std::string_view::npos; at = text.find("eyJ", at + 1)) {
    std::size_t j = at;
    while (j < text.size() && token_char(text[j])) ++j;
    if (j - at >= kTokenRun) return true;
  }
  return false;
}

std::string log_text(std::string_view full, std::size_t max_bytes) {
  const bool cut = full.size() > max_bytes;
  const std::string_view text = full.substr(0, max_bytes);
  std::string out;
  out.reserve(text.size() + 16);
  std::size_t i = 0;
  while (i < text.size()) {
    // A token-shaped run is masked whole, judged on the uncut text so that a
    // cut in the middle of a token cannot let its start through.
    if (full.compare(i, 3, "eyJ") == 0) {
      std::size_t j = i;
      while (j < full.size() && token_char(full[j])) ++j;
      if (j - i >= kTokenRun) {
        out += "eyJ\xE2\x80\xA6(masked, " + std::to_string(j - i) + " bytes)";
        i = std::min(j, text.size());
        continue;
      }
    }
    std::uint32_t cp = 0;
    const std::size_t len = utf8_sequence(text, i, cp);
    if (len == 0) {
      hex_byte(out, static_cast<unsigned char>(text[i]));
      ++i;
      continue;
    }
    if (cp == '\n') out += "\\n";
    else if (cp == '\r') out += "\\r";
    else if (cp == '\t') out += "\\t";
    else if (cp == '\\') out += "\\\\";
    else if (cp == '"') out += "\\\"";
    else if (cp < 0x20 || cp == 0x7F) hex_byte(out, static_cast<unsigned char>(cp));
    else if ((cp >= 0x80 && cp <= 0x9F) || cp == 0x2028 || cp == 0x2029) {
      char buf[12];
      std::snprintf(buf, sizeof buf, "\\u{%04x}", unsigned(cp));
      out += buf;
    } else {
      out.append(text.data() + i, len);
    }
    i += len;
  }
  if (cut) out += "\xE2\x80\xA6(" + std::to_string(full.size()) + " bytes)";
  return out;
}

}  // namespace tokengate
