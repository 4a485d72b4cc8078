// The session settings the SQL targets (splitter, grammar) lex under, taken
// from the input's first byte, so that a fuzzer explores them all.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "parser_ext/encoding.hpp"
#include "parser_ext/lexer.hpp"

namespace tokengate::fuzz {

// Byte 0: bit 0 set = standard_conforming_strings off; bits 1..4 pick the
// client encoding (0 = UTF8, so a seed starting with \0 is the default).
// The list has each kind of encoding: UTF8, SQL_ASCII, single-byte, EUC
// (multibyte, ASCII-safe), the client-only ones whose second byte may be a
// quote or a backslash, and a name tokengate does not know.
inline parser_ext::LexOptions sql_options(std::uint8_t b) {
  using E = parser_ext::ClientEncoding;
  static constexpr std::array<E, 12> encodings{E::utf8,   E::sql_ascii, E::latin1, E::win1251,
                                               E::euc_jp, E::euc_kr,    E::sjis,   E::big5,
                                               E::gbk,    E::uhc,       E::gb18030, E::unknown};
  parser_ext::LexOptions o;
  o.standard_conforming_strings = (b & 1) == 0;
  o.encoding = encodings[(b >> 1) % encodings.size()];
  return o;
}

inline std::string describe(const parser_ext::LexOptions& o) {
  return std::string("client_encoding ") + std::string(parser_ext::encoding_name(o.encoding)) +
         ", standard_conforming_strings " + (o.standard_conforming_strings ? "on" : "off");
}

}  // namespace tokengate::fuzz
