// Client encodings: PostgreSQL 15's names and verifiers (src/common/encnames.c, wchar.c), iconv conversion.
#include "parser_ext/encoding.hpp"

#include <iconv.h>

#include <array>
#include <cerrno>
#include <utility>

namespace tokengate::parser_ext {

namespace {

using E = ClientEncoding;

// PostgreSQL's pg_enc2name_tbl, in enum order.
constexpr std::array<std::string_view, static_cast<std::size_t>(E::unknown) + 1> names = {
    "SQL_ASCII", "EUC_JP",  "EUC_CN",  "EUC_KR",  "EUC_TW",  "EUC_JIS_2004", "UTF8",
    "MULE_INTERNAL", "LATIN1", "LATIN2", "LATIN3", "LATIN4", "LATIN5", "LATIN6", "LATIN7",
    "LATIN8", "LATIN9", "LATIN10", "WIN1256", "WIN1258", "WIN866", "WIN874", "KOI8R",
    "WIN1251", "WIN1252", "ISO_8859_5", "ISO_8859_6", "ISO_8859_7", "ISO_8859_8", "WIN1250",
    "WIN1253", "WIN1254", "WIN1255", "WIN1257", "KOI8U", "SJIS", "BIG5", "GBK", "UHC",
    "GB18030", "JOHAB", "SHIFT_JIS_2004", "unknown"};

// PostgreSQL's pg_encname_tbl: every accepted spelling, lower case, letters
// and digits only.
struct Alias {
  std::string_view name;
  E encoding;
};
constexpr Alias aliases[] = {
    {"abc", E::win1258},          {"alt", E::win866},          {"big5", E::big5},
    {"euccn", E::euc_cn},         {"eucjis2004", E::euc_jis_2004}, {"eucjp", E::euc_jp},
    {"euckr", E::euc_kr},         {"euctw", E::euc_tw},        {"gb18030", E::gb18030},
    {"gbk", E::gbk},              {"iso88591", E::latin1},     {"iso885910", E::latin6},
    {"iso885913", E::latin7},     {"iso885914", E::latin8},    {"iso885915", E::latin9},
    {"iso885916", E::latin10},    {"iso88592", E::latin2},     {"iso88593", E::latin3},
    {"iso88594", E::latin4},      {"iso88595", E::iso_8859_5}, {"iso88596", E::iso_8859_6},
    {"iso88597", E::iso_8859_7},  {"iso88598", E::iso_8859_8}, {"iso88599", E::latin5},
    {"johab", E::johab},          {"koi8", E::koi8r},          {"koi8r", E::koi8r},
    {"koi8u", E::koi8u},          {"latin1", E::latin1},       {"latin10", E::latin10},
    {"latin2", E::latin2},        {"latin3", E::latin3},       {"latin4", E::latin4},
    {"latin5", E::latin5},        {"latin6", E::latin6},       {"latin7", E::latin7},
    {"latin8", E::latin8},        {"latin9", E::latin9},       {"mskanji", E::sjis},
    {"muleinternal", E::mule_internal}, {"shiftjis", E::sjis}, {"shiftjis2004", E::shift_jis_2004},
    {"sjis", E::sjis},            {"sqlascii", E::sql_ascii},  {"tcvn", E::win1258},
    {"tcvn5712", E::win1258},     {"uhc", E::uhc},             {"unicode", E::utf8},
    {"utf8", E::utf8},            {"vscii", E::win1258},       {"win", E::win1251},
    {"win1250", E::win1250},      {"win1251", E::win1251},     {"win1252", E::win1252},
    {"win1253", E::win1253},      {"win1254", E::win1254},     {"win1255", E::win1255},
    {"win1256", E::win1256},      {"win1257", E::win1257},     {"win1258", E::win1258},
    {"win866", E::win866},        {"win874", E::win874},       {"win932", E::sjis},
    {"win936", E::gbk},           {"win949", E::uhc},          {"win950", E::big5},
    {"windows1250", E::win1250},  {"windows1251", E::win1251}, {"windows1252", E::win1252},
    {"windows1253", E::win1253},  {"windows1254", E::win1254}, {"windows1255", E::win1255},
    {"windows1256", E::win1256},  {"windows1257", E::win1257}, {"windows1258", E::win1258},
    {"windows866", E::win866},    {"windows874", E::win874},   {"windows932", E::sjis},
    {"windows936", E::gbk},       {"windows949", E::uhc},      {"windows950", E::big5},
};

// iconv's name for each encoding (glibc gconv), chosen to match PostgreSQL's
// conversion tables: its SJIS includes the CP932 extensions, UHC is CP949.
// Empty: no conversion to UTF-8 (MULE_INTERNAL, as in PostgreSQL).
constexpr std::array<const char*, static_cast<std::size_t>(E::unknown) + 1> iconv_names = {
    "UTF-8", "EUC-JP", "EUC-CN", "EUC-KR", "EUC-TW", "EUC-JISX0213", "UTF-8", "",
    "ISO-8859-1", "ISO-8859-2", "ISO-8859-3", "ISO-8859-4", "ISO-8859-9", "ISO-8859-10",
    "ISO-8859-13", "ISO-8859-14", "ISO-8859-15", "ISO-8859-16", "CP1256", "CP1258", "CP866",
    "CP874", "KOI8-R", "CP1251", "CP1252", "ISO-8859-5", "ISO-8859-6", "ISO-8859-7",
    "ISO-8859-8", "CP1250", "CP1253", "CP1254", "CP1255", "CP1257", "KOI8-U", "CP932", "BIG5",
    "GBK", "CP949", "GB18030", "JOHAB", "SHIFT_JISX0213", ""};

constexpr bool is_euc_range(unsigned char c) noexcept { return c >= 0xa1 && c <= 0xfe; }
constexpr unsigned char ss2 = 0x8e;  // EUC single shift 2
constexpr unsigned char ss3 = 0x8f;  // EUC single shift 3

// pg_utf8_islegal
bool utf8_islegal(const unsigned char* s, std::size_t len) noexcept {
  unsigned char a = 0;
  switch (len) {
    default: return false;
    case 4:
      a = s[3];
      if (a < 0x80 || a > 0xBF) return false;
      [[fallthrough]];
    case 3:
      a = s[2];
      if (a < 0x80 || a > 0xBF) return false;
      [[fallthrough]];
    case 2:
      a = s[1];
      switch (s[0]) {
        case 0xE0: if (a < 0xA0 || a > 0xBF) return false; break;
        case 0xED: if (a < 0x80 || a > 0x9F) return false; break;
        case 0xF0: if (a < 0x90 || a > 0xBF) return false; break;
        case 0xF4: if (a < 0x80 || a > 0x8F) return false; break;
        default: if (a < 0x80 || a > 0xBF) return false; break;
      }
      [[fallthrough]];
    case 1:
      a = s[0];
      if (a >= 0x80 && a < 0xC2) return false;
      if (a > 0xF4) return false;
      break;
  }
  return true;
}

std::size_t utf8_mblen(unsigned char c) noexcept {
  if ((c & 0x80) == 0) return 1;
  if ((c & 0xe0) == 0xc0) return 2;
  if ((c & 0xf0) == 0xe0) return 3;
  if ((c & 0xf8) == 0xf0) return 4;
  return 1;
}

std::size_t euc_mblen(unsigned char c) noexcept {
  if (c == ss2) return 2;
  if (c == ss3) return 3;
  return c >= 0x80 ? 2 : 1;
}

std::size_t mule_mblen(unsigned char c) noexcept {
  if (c >= 0x81 && c <= 0x8d) return 2;       // IS_LC1
  if (c == 0x9a || c == 0x9b) return 3;       // IS_LCPRV1
  if (c >= 0x90 && c <= 0x99) return 3;       // IS_LC2
  if (c == 0x9c || c == 0x9d) return 4;       // IS_LCPRV2
  return 1;
}

bool is_single_byte(E e) noexcept {
  return e == E::sql_ascii || (e >= E::latin1 && e <= E::koi8u);
}

}  // namespace

ClientEncoding client_encoding_from_name(std::string_view name) noexcept {
  // PostgreSQL refuses names of NAMEDATALEN bytes or more outright.
  constexpr std::size_t namedatalen = 64;
  if (name.empty() || name.size() >= namedatalen) return E::unknown;
  char buf[namedatalen];
  std::size_t n = 0;
  for (const char c : name) {
    const bool lower = c >= 'a' && c <= 'z', upper = c >= 'A' && c <= 'Z', digit = c >= '0' && c <= '9';
    if (lower || digit) buf[n++] = c;
    else if (upper) buf[n++] = static_cast<char>(c + ('a' - 'A'));
  }
  const std::string_view key(buf, n);
  for (const Alias& a : aliases)
    if (a.name == key) return a.encoding;
  return E::unknown;
}

std::string_view encoding_name(ClientEncoding e) noexcept {
  return names[static_cast<std::size_t>(e)];
}

namespace encoding {

int verify_char(ClientEncoding e, const unsigned char* s, std::size_t len) noexcept {
  const unsigned char c = s[0];
  if (c < 0x80) return c == 0 ? invalid : 1;
  if (is_single_byte(e)) return 1;
  switch (e) {
    case E::utf8: {
      const std::size_t l = utf8_mblen(c);
      if (l > len || !utf8_islegal(s, l)) return invalid;
      return static_cast<int>(l);
    }
    case E::euc_jp:
    case E::euc_jis_2004:
      if (c == ss2) {
        if (len < 2 || s[1] < 0xa1 || s[1] > 0xdf) return invalid;
        return 2;
      }
      if (c == ss3) {
        if (len < 3 || !is_euc_range(s[1]) || !is_euc_range(s[2])) return invalid;
        return 3;
      }
      if (len < 2 || !is_euc_range(c) || !is_euc_range(s[1])) return invalid;
      return 2;
    case E::euc_cn:
    case E::euc_kr:
      if (len < 2 || !is_euc_range(c) || !is_euc_range(s[1])) return invalid;
      return 2;
    case E::euc_tw:
      if (c == ss2) {
        if (len < 4 || s[1] < 0xa1 || s[1] > 0xa7 || !is_euc_range(s[2]) || !is_euc_range(s[3]))
          return invalid;
        return 4;
      }
      if (c == ss3) return invalid;
      if (len < 2 || !is_euc_range(s[1])) return invalid;
      return 2;
    case E::mule_internal: {
      const std::size_t l = mule_mblen(c);
      if (len < l) return invalid;
      for (std::size_t k = 1; k < l; ++k)
        if (s[k] < 0x80) return invalid;
      return static_cast<int>(l);
    }
    case E::sjis:
    case E::shift_jis_2004: {
      if (c >= 0xa1 && c <= 0xdf) return 1;  // half-width katakana
      if (len < 2) return invalid;
      const unsigned char t = s[1];
      const bool head = (c >= 0x81 && c <= 0x9f) || (c >= 0xe0 && c <= 0xfc);
      const bool tail = (t >= 0x40 && t <= 0x7e) || (t >= 0x80 && t <= 0xfc);
      return head && tail ? 2 : invalid;
    }
    case E::big5:
    case E::gbk:
    case E::uhc:
      if (len < 2 || s[1] == 0) return invalid;
      // No BIG5, GBK (CP936) or UHC (CP949) table has a second byte below 0x40.
      if (s[1] < 0x40) return no_equivalent;
      return 2;
    case E::gb18030:
      if (len >= 4 && s[1] >= 0x30 && s[1] <= 0x39) {
        if (c >= 0x81 && c <= 0xfe && s[2] >= 0x81 && s[2] <= 0xfe && s[3] >= 0x30 &&
            s[3] <= 0x39)
          return 4;
        return invalid;
      }
      if (len >= 2 && c >= 0x81 && c <= 0xfe) {
        if ((s[1] >= 0x40 && s[1] <= 0x7e) || (s[1] >= 0x80 && s[1] <= 0xfe)) return 2;
        return invalid;
      }
      return invalid;
    case E::johab: {
      const std::size_t l = euc_mblen(c);
      if (len < l) return invalid;
      for (std::size_t k = 1; k < l; ++k)
        if (!is_euc_range(s[k])) return invalid;
      return static_cast<int>(l);
    }
    case E::unknown:
      return unsupported;
    default:
      return 1;
  }
}

std::size_t char_length(ClientEncoding e, const unsigned char* s, std::size_t len) noexcept {
  if (len == 0) return 0;
  const unsigned char c = s[0];
  std::size_t l = 1;
  if (c >= 0x80) {
    switch (e) {
      case E::utf8: l = utf8_mblen(c); break;
      case E::euc_jp:
      case E::euc_jis_2004:
      case E::euc_kr:
      case E::johab: l = euc_mblen(c); break;
      case E::euc_cn:
      case E::big5:
      case E::gbk:
      case E::uhc: l = 2; break;
      case E::euc_tw: l = c == ss2 ? 4 : c == ss3 ? 3 : 2; break;
      case E::mule_internal: l = mule_mblen(c); break;
      case E::sjis:
      case E::shift_jis_2004: l = (c >= 0xa1 && c <= 0xdf) ? 1 : 2; break;
      case E::gb18030: l = (len > 1 && s[1] >= 0x30 && s[1] <= 0x39) ? 4 : 2; break;
      default: l = 1; break;
    }
  }
  return l < len ? l : len;
}

std::size_t char_count(ClientEncoding e, std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t chars = 0;
  if (e == E::utf8) {  // the common case, without per-character calls
    for (std::size_t k = 0; k < n; ++k) chars += (p[k] & 0xC0) != 0x80;
    return chars;
  }
  for (std::size_t i = 0; i < n; ++chars) {
    const int l = p[i] < 0x80 ? 1 : verify_char(e, p + i, n - i);
    i += l > 0 ? static_cast<std::size_t>(l) : 1;
  }
  return chars;
}

std::size_t advance_chars(ClientEncoding e, std::string_view s, std::size_t from,
                          std::size_t chars) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = from;
  for (; i < n && chars > 0; --chars) {
    const int l = p[i] < 0x80 ? 1 : verify_char(e, p + i, n - i);
    i += l > 0 ? static_cast<std::size_t>(l) : 1;
  }
  return i < n ? i : n;
}

std::string byte_sequence_text(const unsigned char* s, std::size_t len) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  for (std::size_t k = 0; k < len && k < 8; ++k) {
    if (k > 0) out += ' ';
    out += "0x";
    out += hex[s[k] >> 4];
    out += hex[s[k] & 0xF];
  }
  return out;
}

ParseError character_error(ClientEncoding e, int code, const unsigned char* s, std::size_t len) {
  ParseError err;
  const std::string bytes = byte_sequence_text(s, char_length(e, s, len));
  if (code == no_equivalent) {
    err.code = ParseErrc::untranslatable_character;
    err.message = "character with byte sequence " + bytes + " in encoding \"" +
                  std::string(encoding_name(e)) + "\" has no equivalent in encoding \"UTF8\"";
  } else if (code == unsupported) {
    err.code = ParseErrc::feature_not_supported;
    err.message = "tokengate does not know this client_encoding and cannot split a Query "
                  "holding the byte " + byte_sequence_text(s, 1);
    err.hint = "Use client_encoding UTF8, or keep API TOKEN statements in their own Query.";
  } else {
    err.code = ParseErrc::character_not_in_repertoire;
    // With client_encoding SQL_ASCII, PostgreSQL checks the text against the
    // server's encoding; tokengate takes that to be UTF-8.
    const ClientEncoding named = e == E::sql_ascii ? E::utf8 : e;
    err.message = "invalid byte sequence for encoding \"" + std::string(encoding_name(named)) +
                  "\": " + byte_sequence_text(s, char_length(named, s, len));
  }
  return err;
}

std::optional<ParseError> to_utf8(ClientEncoding e, std::string_view in, std::string& out) {
  const auto* p = reinterpret_cast<const unsigned char*>(in.data());
  const std::size_t n = in.size();
  const ClientEncoding checked_as = e == E::sql_ascii ? E::utf8 : e;
  out.clear();
  out.reserve(n);
  iconv_t cd = reinterpret_cast<iconv_t>(-1);
  const auto close = [&cd] {
    if (cd != reinterpret_cast<iconv_t>(-1)) iconv_close(cd);
  };
  const auto fail = [&](ParseError err, std::size_t at) {
    close();
    err.byte_offset = at;
    err.position = 0;
    return std::optional<ParseError>(std::move(err));
  };
  for (std::size_t i = 0; i < n;) {
    const int l = verify_char(checked_as, p + i, n - i);
    if (l < 0) return fail(character_error(checked_as, l, p + i, n - i), i);
    const auto len = static_cast<std::size_t>(l);
    if (p[i] < 0x80 || checked_as == E::utf8) {
      out.append(in.substr(i, len));
      i += len;
      continue;
    }
    const char* name = iconv_names[static_cast<std::size_t>(e)];
    if (name[0] == '\0') {
      ParseError err;
      err.code = ParseErrc::feature_not_supported;
      err.message = "conversion between " + std::string(encoding_name(e)) +
                    " and UTF8 is not supported";
      return fail(std::move(err), i);
    }
    if (cd == reinterpret_cast<iconv_t>(-1)) {
      cd = iconv_open("UTF-8", name);
      if (cd == reinterpret_cast<iconv_t>(-1)) {
        ParseError err;
        err.code = ParseErrc::feature_not_supported;
        err.message = "conversion between " + std::string(encoding_name(e)) +
                      " and UTF8 is not available on this system";
        return fail(std::move(err), i);
      }
    }
    // A byte PostgreSQL reads as the lead of a multibyte character must not
    // be a whole character to iconv: glibc's BIG5 maps 0x80 alone to U+0080,
    // so 0x80 0x80 (no character in PostgreSQL's table, which refuses it
    // with 22P05) would come out as two characters and shift every position.
    if (len > 1) {
      char one[8];
      char* lead = const_cast<char*>(in.data() + i);
      std::size_t lead_left = 1;
      char* dst = one;
      std::size_t dst_left = sizeof one;
      iconv(cd, nullptr, nullptr, nullptr, nullptr);
      if (iconv(cd, &lead, &lead_left, &dst, &dst_left) != static_cast<std::size_t>(-1) && lead_left == 0 &&
          dst != one)
        return fail(character_error(e, encoding::no_equivalent, p + i, len), i);
    }
    // One character at a time: its UTF-8 form is at most 4 bytes per
    // Unicode code point, and a few legacy characters map to two.
    char buf[16];
    char* src = const_cast<char*>(in.data() + i);
    std::size_t src_left = len;
    char* dst = buf;
    std::size_t dst_left = sizeof buf;
    iconv(cd, nullptr, nullptr, nullptr, nullptr);  // reset the shift state
    if (iconv(cd, &src, &src_left, &dst, &dst_left) == static_cast<std::size_t>(-1) ||
        src_left != 0) {
      return fail(character_error(e, encoding::no_equivalent, p + i, len), i);
    }
    // Characters that iconv maps to ASCII (a yen sign table mapping 0x5C, say)
    // would change how the text lexes: refuse them as unmappable.
    for (const char* k = buf; k < dst; ++k)
      if (static_cast<unsigned char>(*k) < 0x80)
        return fail(character_error(e, encoding::no_equivalent, p + i, len), i);
    out.append(buf, static_cast<std::size_t>(dst - buf));
    i += len;
  }
  close();
  return std::nullopt;
}

bool from_utf8(ClientEncoding e, std::string_view utf8, std::string& out) {
  out.clear();
  if (e == E::utf8 || e == E::sql_ascii) {
    out.assign(utf8);
    return true;
  }
  const char* name = iconv_names[static_cast<std::size_t>(e)];
  iconv_t cd = reinterpret_cast<iconv_t>(-1);
  bool ok = true;
  const auto* p = reinterpret_cast<const unsigned char*>(utf8.data());
  for (std::size_t i = 0; i < utf8.size() && ok;) {
    if (p[i] < 0x80) {
      out += static_cast<char>(p[i++]);
      continue;
    }
    const int l = verify_char(E::utf8, p + i, utf8.size() - i);
    if (l < 0 || name[0] == '\0') {
      ok = false;
      break;
    }
    if (cd == reinterpret_cast<iconv_t>(-1)) {
      cd = iconv_open(name, "UTF-8");
      if (cd == reinterpret_cast<iconv_t>(-1)) {
        ok = false;
        break;
      }
    }
    char buf[16];
    char* src = const_cast<char*>(utf8.data() + i);
    std::size_t src_left = static_cast<std::size_t>(l);
    char* dst = buf;
    std::size_t dst_left = sizeof buf;
    iconv(cd, nullptr, nullptr, nullptr, nullptr);
    if (iconv(cd, &src, &src_left, &dst, &dst_left) == static_cast<std::size_t>(-1) ||
        src_left != 0) {
      ok = false;
      break;
    }
    out.append(buf, static_cast<std::size_t>(dst - buf));
    i += static_cast<std::size_t>(l);
  }
  if (cd != reinterpret_cast<iconv_t>(-1)) iconv_close(cd);
  return ok;
}

}  // namespace encoding

}  // namespace tokengate::parser_ext
