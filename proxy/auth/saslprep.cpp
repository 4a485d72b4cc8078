// SASLprep of passwords with ICU's NFKC (see saslprep.hpp).
#include "proxy/auth/saslprep.hpp"

#include <unicode/normalizer2.h>
#include <unicode/unistr.h>
#include <unicode/utf8.h>

namespace tokengate::auth {
namespace {

// RFC 3454 B.1: commonly mapped to nothing.
bool mapped_to_nothing(UChar32 c) {
  return c == 0x00AD || c == 0x034F || c == 0x1806 || (c >= 0x180B && c <= 0x180D) ||
         (c >= 0x200B && c <= 0x200D) || c == 0x2060 || (c >= 0xFE00 && c <= 0xFE0F) || c == 0xFEFF;
}

// RFC 3454 C.1.2: non-ASCII space characters, mapped to SPACE.
bool non_ascii_space(UChar32 c) {
  return c == 0x00A0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200B) || c == 0x202F || c == 0x205F ||
         c == 0x3000;
}

// RFC 4013 section 2.3: prohibited output (control characters, private use,
// non-characters, surrogates, unassigned in 3.2 is not checked here).
bool prohibited(UChar32 c) {
  if (c < 0x20 || c == 0x7F || (c >= 0x80 && c <= 0x9F)) return true;                  // C.2.1, C.2.2
  if (c == 0x06DD || c == 0x070F || c == 0x180E || (c >= 0x200C && c <= 0x200D) ||     // C.2.2
      (c >= 0x2028 && c <= 0x2029) || (c >= 0x2060 && c <= 0x2063) || (c >= 0x206A && c <= 0x206F) ||
      c == 0xFEFF || (c >= 0xFFF9 && c <= 0xFFFC) || (c >= 0x1D173 && c <= 0x1D17A))
    return true;
  if ((c >= 0xE000 && c <= 0xF8FF) || (c >= 0xF0000 && c <= 0xFFFFD) || (c >= 0x100000 && c <= 0x10FFFD))
    return true;                                                                        // C.3
  if ((c & 0xFFFE) == 0xFFFE || (c >= 0xFDD0 && c <= 0xFDEF)) return true;             // C.4
  if (c >= 0xD800 && c <= 0xDFFF) return true;                                          // C.5
  if (c >= 0xFFF9 && c <= 0xFFFD) return true;                                          // C.6
  if (c >= 0x2FF0 && c <= 0x2FFB) return true;                                          // C.7
  if ((c >= 0x0340 && c <= 0x0341) || (c >= 0x200E && c <= 0x200F) || (c >= 0x202A && c <= 0x202E) ||
      (c >= 0x206A && c <= 0x206F))
    return true;                                                                        // C.8
  if (c == 0xE0001 || (c >= 0xE0020 && c <= 0xE007F)) return true;                     // C.9
  return false;
}

}  // namespace

std::string saslprep_password(std::string_view password) {
  bool ascii = true;
  for (unsigned char ch : password) ascii = ascii && ch < 0x80;
  if (ascii) return std::string(password);

  // Decode, map (B.1 to nothing, C.1.2 to SPACE); invalid UTF-8 → raw.
  icu::UnicodeString mapped;
  std::int32_t i = 0, n = std::int32_t(password.size());
  const auto* p = reinterpret_cast<const std::uint8_t*>(password.data());
  while (i < n) {
    UChar32 c;
    U8_NEXT(p, i, n, c);
    if (c < 0) return std::string(password);
    if (mapped_to_nothing(c)) continue;
    mapped.append(non_ascii_space(c) ? UChar32(0x20) : c);
  }
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* nfkc = icu::Normalizer2::getNFKCInstance(status);
  if (U_FAILURE(status)) return std::string(password);
  icu::UnicodeString normalized = nfkc->normalize(mapped, status);
  if (U_FAILURE(status)) return std::string(password);
  for (std::int32_t k = 0; k < normalized.length();) {
    UChar32 c = normalized.char32At(k);
    if (prohibited(c)) return std::string(password);
    k += U16_LENGTH(c);
  }
  std::string out;
  normalized.toUTF8String(out);
  return out;
}

}  // namespace tokengate::auth
